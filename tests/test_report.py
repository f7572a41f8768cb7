"""`blockcert report` (issue 14): the HTML report of a stitched and bounded toy run, opened in headless Chromium.

The browser is Debian's `chromium` (installed by `make browser`, which `make test` runs), driven by Playwright
pointed at that binary. The report must render without console errors, show the run's own numbers (read
back from the certificates here, not from the report), load every image, show a tampered run as failed and
a JSON-only copy as not verified, and render hostile prompt text as text.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from blockcert.formal.mirror import FORMAL_FILE, check
from blockcert.present.report_html import num
from blockcert.records.certificate import BlockCertificate
from blockcert.records.fullmodel import CERTIFICATE_FILE, FullModelCertificate
from blockcert.store.formal_json import read_formal
from tests.conftest import error_lines

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "<script>window.__pwned = 1; alert('x')</script> & <b>bold</b> <img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, toy_models) -> Path:
    """A bf16 toy run, stitched, bounded, with a threshold study and a Lean module; one prompt is hostile HTML."""
    from blockcert.workflows.bound import BoundOptions, run_bound
    from blockcert.workflows.extract import ExtractOptions, run_extract
    from blockcert.workflows.lean import run_lean
    from blockcert.workflows.sensitivity import threshold_sensitivity, write_report
    from blockcert.workflows.stitch import StitchOptions, run_stitch

    root = tmp_path_factory.mktemp("report")
    prompts = root / "prompts.txt"
    prompts.write_text(f"The cat sat on the mat.\n{HOSTILE}\nfor i in range(3): print(i)\n", encoding="utf-8")
    model = str(toy_models["llama-gqa"])
    run = root / "run"
    run_extract(ExtractOptions(model, str(prompts), "all", run, surrogate="bf16"))
    run_stitch(StitchOptions(run, model=model))
    run_bound(BoundOptions(run, model=model, power_iters=3, empirical_tokens=1))
    write_report(run / "threshold_sensitivity.json", threshold_sensitivity(run))
    run_lean(run, False, None, into_project=False)
    return run


@pytest.fixture
def copy_of(full_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(full_run, dst)
    return dst


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run `make browser` (part of `make test`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # root in CI: no sandbox
        yield b
        b.close()


class Page:
    """A loaded report: its console messages, page errors and dialogs, collected from before the load."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")

    def text(self, selector: str = "body") -> str:
        return self.page.inner_text(selector)

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def open_report(browser):
    pages = []

    def go(path: Path) -> Page:
        pages.append(Page(browser, path))
        return pages[-1]

    yield go
    for p in pages:
        p.close()


def _cert(run: Path, i: int) -> BlockCertificate:
    return BlockCertificate.model_validate_json((run / f"block_{i:03d}" / "certificate.json").read_bytes())


def test_report_of_a_stitched_bounded_run_renders_with_its_numbers(cli, copy_of, open_report):
    r = cli("report", copy_of)
    assert r.code == 0, r.err
    path = copy_of / "report.html"
    assert str(path) in r.out and "VERIFIED" in r.out
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html.lower().replace("&lt;script", "")  # no script of ours, the prompt's escaped
    assert "http://" not in html and "https://" not in html and "<link" not in html  # self-contained
    pngs = sorted(copy_of.glob("report_*.png"))
    assert {p.name for p in pngs} >= {"report_blocks.png", "report_deviation.png", "report_bound_ratio.png",
                                      "report_token_scale.png", "report_prompt_eps.png"}

    page = open_report(path)
    assert page.problems == [] and page.dialogs == []
    assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    sizes = page.page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
    assert len(sizes) >= 5 and all(done and w > 0 for done, w in sizes), sizes

    status = page.page.locator("#verification-status")
    assert "VERIFIED" in status.inner_text() and "verified" in status.get_attribute("class")
    for i in (0, 1, 2):
        c = _cert(copy_of, i)
        row = page.text(f"#block-{i}")
        assert num(c.metrics.epsilon) in row and num(c.metrics.mae) in row
        assert ("yes" if c.certified else "NO") in row
    fc = FullModelCertificate.model_validate_json((copy_of / CERTIFICATE_FILE).read_bytes())
    full = page.text("#full-model")
    assert format(fc.metrics.baseline_ppl, ".10g") in full and format(fc.metrics.stitched_ppl, ".10g") in full
    assert ("CERTIFIED" if fc.certified else "NOT certified") in page.text("#full-model-verdict")
    assert "Threshold sensitivity" in page.text("#studies")
    verdict = check(read_formal(copy_of / FORMAL_FILE))
    assert page.text("#lean-verdict") == ("PASS" if verdict else "FAIL")
    assert "theorem global_bound" in page.text("#lean")


def test_hostile_prompt_text_renders_as_text(cli, copy_of, open_report):
    assert cli("report", copy_of, "--out", copy_of / "out" / "r.html").code == 0
    page = open_report(copy_of / "out" / "r.html")
    assert page.dialogs == [] and page.problems == []
    assert page.page.evaluate("() => document.querySelectorAll('script').length") == 0
    assert page.page.evaluate("() => window.__pwned === undefined")
    assert page.text("#prompt-1").endswith(HOSTILE)  # shown exactly, as text
    # no element came from the prompt: the only <b> are the prompt numbers of the template
    assert page.page.evaluate("() => document.querySelectorAll('#prompts img').length") == 0
    assert page.page.evaluate("() => document.querySelectorAll('#prompts b').length") == 3


def test_tokens_are_decoded_with_the_runs_tokenizer(cli, copy_of, open_report, toy_models):
    assert cli("report", copy_of, "--model", toy_models["llama-gqa"]).code == 0
    page = open_report(copy_of / "report.html")
    heads = page.page.eval_on_selector_all("#tokens table >> nth=1 >> th.tok", "els => els.map(e => e.textContent)")
    assert "".join(heads).startswith("<script>")  # the byte tokenizer's tokens, escaped into headers
    assert page.page.evaluate("() => document.querySelectorAll('script').length") == 0
    without = cli("report", copy_of)
    assert without.code == 0
    page = open_report(copy_of / "report.html")
    first = page.page.eval_on_selector_all("#tokens table >> nth=0 >> th.tok", "els => els.map(e => e.textContent)")
    assert all(t.isdigit() for t in first)  # no model given: token ids


def test_a_tampered_artifact_is_shown_as_a_failure(cli, copy_of, open_report):
    traces = copy_of / "block_001" / "traces.safetensors"
    data = bytearray(traces.read_bytes())
    data[-1] ^= 0x01
    traces.write_bytes(bytes(data))
    r = cli("report", copy_of)
    assert r.code == 0, r.err
    assert "FAILED" in r.out and "VERIFIED" not in r.out.replace("NOT VERIFIED", "")
    page = open_report(copy_of / "report.html")
    assert page.problems == []
    status = page.page.locator("#verification-status")
    assert "FAILED" in status.inner_text() and "failed" in status.get_attribute("class")
    red = page.page.locator("ul.lines.fail li", has_text="block_001/traces.safetensors")
    assert red.count() >= 1
    assert red.first.evaluate("e => getComputedStyle(e).color") == "rgb(183, 28, 28)"
    assert "FAIL" in page.text("#block-1")
    assert "block 1 left out" in page.text("#tokens")


def test_a_copy_without_tensors_is_not_verified_and_says_why(cli, copy_of, open_report):
    for p in copy_of.glob("block_*/*.safetensors"):
        p.unlink()
    r = cli("report", copy_of)
    assert r.code == 0, r.err
    page = open_report(copy_of / "report.html")
    status = page.page.locator("#verification-status")
    assert "incomplete" in status.get_attribute("class")
    assert "NOT VERIFIED: tensors not shipped with this copy" in status.inner_text()
    assert "tensors not shipped" in page.text("#block-0") and "tensors not shipped" in page.text("#tokens")
    assert page.text("#lean-verdict") in ("PASS", "FAIL")  # certificate-level sections still shown


def test_bad_input_gives_one_error_line(cli, copy_of, tmp_path):
    r = cli("report", tmp_path / "nope")
    assert r.code == 1 and error_lines(r.err) == [f"error: run directory {tmp_path / 'nope'} does not exist"]
    r = cli("report", copy_of, "--out", tmp_path / "report.txt")
    assert r.code == 1 and len(error_lines(r.err)) == 1 and ".html" in r.err
    assert "Traceback" not in r.err


def test_committed_smollm2_run_is_never_shown_as_verified(tmp_path):
    """The committed artifact holds JSON only: its report must not claim a verified run."""
    from blockcert.workflows.report import build_report

    res = build_report(ROOT / "artifacts" / "smollm2-bf16-stress", tmp_path / "smollm2.html")
    assert res.state != "verified" and res.path.is_file()
    assert "VERIFIED: every check" not in res.path.read_text(encoding="utf-8")
