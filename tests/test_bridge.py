"""Python → Lean: the generated run modules (golden text, GENERATED.md's template, numbers equal to the
mirror's) and `blockcert lean`. Tests that need a Lean toolchain run when `lake` is on PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from blockcert.errors import BlockCertError
from blockcert.formal.lean import module_name, render_module
from blockcert.formal.mirror import check
from blockcert.store.formal_inputs import build_formal
from blockcert.store.formal_json import read_formal, write_formal
from blockcert.workflows.lean import LAKE_MISSING, instantiate, run_lean

from ._formal_fixtures import FIXTURES, GOLDEN, materialize, spec_names
from ._lean_text import parse_lean_run

REPO = Path(__file__).resolve().parents[1]
UPDATE = os.environ.get("BLOCKCERT_UPDATE_GOLDEN") == "1"  # rewrite the golden files, then review the diff
LAKE = shutil.which("lake")
needs_lake = pytest.mark.skipif(
    LAKE is None, reason="no Lean toolchain on PATH: install elan to run lake build / lake exe blockcert_check"
)


def lean_tree(dst: Path) -> Path:
    """A copy of this repository's Lean project to write run modules into (the real BlockCert/Runs stays clean)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("lakefile.lean", "lean-toolchain", "BlockCert.lean"):
        shutil.copy(REPO / f, dst / f)
    shutil.copytree(REPO / "BlockCert", dst / "BlockCert", dirs_exist_ok=True)
    return dst


def example_run():
    return read_formal(FIXTURES / "example_run.json")


def fixture_module(run_dir: Path) -> str:
    """The module name of a fixture run: its readable name, then 8 hex digits of its manifest's run id."""
    from blockcert.store.manifest import load_manifest

    return module_name(build_formal(run_dir).run.name, load_manifest(run_dir).run_id())


RUN_ID = re.compile(r"_[0-9a-f]{8}\b")


@pytest.mark.parametrize(
    ("run", "name"),
    [("smollm2-135m/run1", "Smollm2_135m_run1"), ("tiny-fixture/carried", "Tiny_fixture_carried"),
     ("135m/x", "Run_135m_x"), ("Example", "Example_run"), ("--/--", "Run"), ("modèle/été", "Mod_le_t")],
)
def test_module_names(run, name):
    assert module_name(run) == name
    assert re.fullmatch(r"[A-Z][A-Za-z0-9_]*", name)
    run_id = "3fa29c1e" + "0" * 56
    assert module_name(run, run_id) == (name[:-4] if name == "Example_run" else name) + "_3fa29c1e"


# ---- golden text --------------------------------------------------------------------------------------


def _golden(path: Path, text: str) -> None:
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with BLOCKCERT_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{path.name} changed (BLOCKCERT_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("spec", spec_names())
def test_golden_module_and_formal_json(spec, tmp_path):
    run_dir = materialize(spec, tmp_path / "runs")
    module = instantiate(run_dir, lean_tree(tmp_path / "lean"))
    name = module.stem
    assert name == fixture_module(run_dir) and RUN_ID.search(name)  # the run id's 8 hex digits end the name
    assert module == tmp_path / "lean" / "BlockCert" / "Runs" / f"{name}.lean"
    text = module.read_text(encoding="utf-8")
    assert (run_dir / f"{name}.lean").read_text(encoding="utf-8") == text  # the copy beside the run
    # The run id digests the certificates, which record the tool's version: the golden text has it as <runid>,
    # after the assertion above pinned it exactly.
    stem = name[: -len("_12345678")]
    _golden(GOLDEN / f"{stem}.lean", text.replace(name, f"{stem}_<runid>"))
    # Provenance digests change with the tool's version (certificates record it); the rest must not.
    text = (run_dir / "formal_run.json").read_text(encoding="utf-8")
    text = re.sub(r'"[0-9a-f]{64}"', '"<sha256>"', text).replace(name, f"{stem}_<runid>")
    _golden(GOLDEN / f"{spec}.formal_run.json", text)


def test_example_renders_as_the_hand_written_example():
    """Example.lean is GENERATED.md's template filled by hand; the bridge fills it the same way (comments aside)."""
    def code(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("--")]

    hand = (REPO / "BlockCert" / "Runs" / "Example.lean").read_text(encoding="utf-8")
    assert code(render_module(example_run(), "Example")) == code(hand)


# ---- the numbers in the module are the mirror's exact values --------------------------------------------


@pytest.mark.parametrize("spec", spec_names())
def test_module_numbers_equal_the_mirror(spec, tmp_path):
    run_dir = materialize(spec, tmp_path / "runs")
    module = instantiate(run_dir, lean_tree(tmp_path / "lean"))
    built = build_formal(run_dir).run
    parsed = parse_lean_run(module.read_text(encoding="utf-8"), built.name)
    assert parsed == built == read_formal(run_dir)  # module, mirror and formal_run.json: the same fractions
    assert len(parsed.blocks) == len(built.blocks)
    assert all(isinstance(b.epsilon, Fraction) for b in parsed.blocks)


def test_real_run_module_numbers(toy_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(toy_run, run_dir)
    module = instantiate(run_dir, lean_tree(tmp_path / "lean"))
    built = build_formal(run_dir).run
    assert parse_lean_run(module.read_text(encoding="utf-8"), built.name) == built
    assert check(built)


# ---- the template of BlockCert/GENERATED.md --------------------------------------------------------------

_NAT, _INT, _POS = r"\d+", r"-?\d+", r"[1-9]\d*"
_PLACEHOLDERS = {
    "run name": r"[^\n]+", "Name": r"[A-Z][A-Za-z0-9_]*",
    "αact num": _INT, "αact den": _POS, "αloss num": _INT, "αloss den": _POS,
    "i": _NAT, "k": _NAT, "T": _NAT, "n": _INT, "d": _POS,
    "some ⟨n, d⟩ or none": rf"(?:none|some ⟨{_INT}, {_POS}⟩)", "true or false": "(?:true|false)",
}


def _pattern(text: str) -> str:
    """Literal text escaped, each `<<…>>` replaced by what it stands for (an unknown one fails the test)."""
    out, pos = [], 0
    for m in re.finditer(r"<<(.+?)>>", text):
        assert m.group(1) in _PLACEHOLDERS, f"GENERATED.md has a placeholder this test does not know: {m.group(0)}"
        out += [re.escape(text[pos:m.start()]), _PLACEHOLDERS[m.group(1)]]
        pos = m.end()
    return "".join(out) + re.escape(text[pos:])


_PAIR = rf"⟨⟨{_INT}, {_POS}⟩, ⟨{_INT}, {_POS}⟩⟩"
_PLACEHOLDERS["⟨ε, L⟩ pairs"] = rf"(?:{_PAIR}(?:, {_PAIR})*)?"


def _claim(block: str, num: str, den: str, group: str) -> str:
    """A code block of GENERATED.md with its constant (`num`/`den`) captured once and repeated identically."""
    b = block.replace(num, f"(?P<{group}num>-?\\d+)", 1).replace(den, f"(?P<{group}den>[1-9]\\d*)", 1)
    return b.replace(num, f"(?P={group}num)").replace(den, f"(?P={group}den)")


def _per_prompt_regex(block: str) -> str:
    lines = block.splitlines()
    start = lines.index("    prompts := [")
    more = next(i for i, line in enumerate(lines) if line.strip().startswith("<<…"))
    end = lines.index("    ] }")
    entry = "\n".join(lines[start + 1:more])
    assert entry.endswith("},"), "a prompt entry in the template ends with `},`"
    e = _pattern(entry[:-1])
    prompts = rf"    prompts := \[\n(?:{e},\n)*{e}\n    \] \}}\n|    prompts := \[\] \}}\n"
    head = _pattern("\n".join(lines[:start]) + "\n")
    tail = _pattern("\n".join(lines[end + 1:]) + "\n")
    return _claim(f"{head}(?:{prompts}){tail}", "P_NUM", "P_DEN", "p")


def template_regex() -> re.Pattern:
    doc = (REPO / "BlockCert" / "GENERATED.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Template"):]
    template, bound, per_prompt = re.findall(r"```lean\n(.*?)```", section, flags=re.S)[:3]
    lines = template.splitlines()
    start = lines.index("    blocks := [")
    more = next(i for i, line in enumerate(lines) if line.strip().startswith("<<…"))
    end = lines.index("    ],")
    entry = "\n".join(lines[start + 1:more])
    assert entry.endswith("},"), "a block entry in the template ends with `},`"
    e = _pattern(entry[:-1])
    blocks = rf"    blocks := \[\n(?:{e},\n)*{e}\n    \],\n|    blocks := \[\],\n"
    head = _pattern("\n".join(lines[:start]) + "\n")
    tail_lines = lines[end + 1:]
    k = tail_lines.index("<<BOUND PART>>")
    assert tail_lines[k + 1] == "<<PER-PROMPT PART>>"
    before = _pattern("\n".join(tail_lines[:k]) + "\n")
    after = _pattern("\n".join(tail_lines[k + 2:]) + "\n")
    b = _claim(re.escape(bound), "C_NUM", "C_DEN", "c")
    return re.compile(f"{head}(?:{blocks}){before}(?:{b}|\n)(?:{_per_prompt_regex(per_prompt)})?{after}")


@pytest.mark.parametrize("spec", spec_names())
def test_generated_module_matches_the_template(spec, tmp_path):
    run_dir = materialize(spec, tmp_path / "runs")
    text = instantiate(run_dir, lean_tree(tmp_path / "lean")).read_text(encoding="utf-8")
    m = template_regex().fullmatch(text)
    assert m, text
    run = build_formal(run_dir).run
    if m.group("cnum") is not None:  # the bound part: its constant is the claimed bound
        assert Fraction(int(m.group("cnum")), int(m.group("cden"))) == run.claimed_bound
    # the per-prompt part exactly when the run carries one, its constant the per-prompt claim
    assert (m.group("pnum") is not None) == (run.per_prompt is not None)
    if run.per_prompt is not None:
        assert Fraction(int(m.group("pnum")), int(m.group("pden"))) == run.per_prompt.claimed_bound
    assert (m.group("cnum") is not None) == (
        run.claimed_bound is not None and all(b.lipschitz is not None for b in run.blocks)
    )


@pytest.mark.parametrize("variant", ["full", "no_bound", "no_blocks", "prompts", "no_prompts"])
def test_template_shape_of_edge_cases(variant):
    from .test_formal import with_prompts

    r = example_run()
    if variant == "prompts":
        r = with_prompts(r)
    elif variant == "no_prompts":
        r = replace(with_prompts(r), per_prompt=replace(with_prompts(r).per_prompt, prompts=()))
    elif variant == "no_bound":
        r = replace(r, blocks=(replace(r.blocks[0], lipschitz=None), r.blocks[1]))
    elif variant == "no_blocks":
        r = replace(r, blocks=(), claimed_bound=None, measured_deviation=None)
    assert template_regex().fullmatch(render_module(r, "Edge")), render_module(r, "Edge")


# ---- `blockcert lean` ------------------------------------------------------------------------------------


def test_cli_lean_writes_and_reports(cli, tmp_path):
    run_dir = materialize("carried", tmp_path / "runs")
    tree = lean_tree(tmp_path / "lean")
    res = cli("lean", run_dir, "--lean-root", tree, "--project")
    assert res.code == 0, res.err
    assert "verdict: PASS" in res.out and "global bound: not computed" in res.out
    assert (tree / "BlockCert" / "Runs" / f"{fixture_module(run_dir)}.lean").is_file()
    assert (run_dir / "formal_run.json").is_file()
    assert "note: no bound.json" in res.out


def test_cli_lean_writes_into_the_run_directory_as_a_lake_package_by_default(cli, tmp_path):
    run_dir = materialize("carried", tmp_path / "runs")
    tree = lean_tree(tmp_path / "lean")
    res = cli("lean", run_dir, "--lean-root", tree)
    assert res.code == 0, res.err
    name = fixture_module(run_dir)
    module = run_dir / f"{name}.lean"
    assert module.is_file() and f"wrote {module}" in res.out
    assert not (tree / "BlockCert" / "Runs" / f"{name}.lean").exists()  # the project is untouched
    lakefile = (run_dir / "lakefile.lean").read_text(encoding="utf-8")
    where = re.search(r'require blockcert from "([^"]+)"', lakefile).group(1)
    assert (run_dir / where).resolve() == tree.resolve()  # the BlockCert library, by a path that resolves
    assert f"roots := #[`{name}]" in lakefile
    assert (run_dir / "lean-toolchain").read_bytes() == (tree / "lean-toolchain").read_bytes()
    assert module.read_text(encoding="utf-8").startswith("-- Generated by blockcert.bridge")
    assert cli("verify", run_dir).code in (0, 1)  # the module copy is what verify compares, wherever it is


def test_cli_lean_fails_on_a_violating_run_but_writes_the_module(cli, tmp_path):
    from .test_verify import reseal

    run_dir = materialize("carried", tmp_path / "runs")
    reseal(run_dir, 3, lambda d: d.update(certified=True))  # coverage 60/74 < 0.94, yet flagged certified
    tree = lean_tree(tmp_path / "lean")
    res = cli("lean", run_dir, "--lean-root", tree, "--project")
    assert res.code == 1
    assert "  - block 3: certified = true, but the coverages against the policy give false" in res.out
    # written all the same: on a host with Lean, `lake build` now fails on it
    assert "certified := true" in (tree / "BlockCert" / "Runs" / f"{fixture_module(run_dir)}.lean").read_text()


def test_build_without_lake_says_how_to_install_lean(cli, tmp_path, monkeypatch):
    run_dir = materialize("carried", tmp_path / "runs")
    tree = lean_tree(tmp_path / "lean")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # whatever this host has, no lake here
    with pytest.raises(BlockCertError) as e:
        run_lean(run_dir, build=True, lean_root=tree, into_project=True)
    assert str(e.value) == LAKE_MISSING and "elan" in LAKE_MISSING and "\n" not in LAKE_MISSING
    assert (tree / "BlockCert" / "Runs" / f"{fixture_module(run_dir)}.lean").is_file()
    res = cli("lean", run_dir, "--build", "--lean-root", tree, "--project")
    assert res.code == 1 and res.err.strip().splitlines() == [f"error: {LAKE_MISSING}"]


def test_default_lean_root_is_this_repository():
    from blockcert.workflows.lean import REPO_ROOT, lean_root_or_default

    assert lean_root_or_default(None) == REPO_ROOT == REPO


def test_not_a_lean_project(tmp_path):
    run_dir = materialize("carried", tmp_path / "runs")
    with pytest.raises(BlockCertError, match="not the BlockCert Lean project"):
        instantiate(run_dir, tmp_path)


# ---- with a Lean toolchain -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_tree(tmp_path_factory):
    """The Lean project with every fixture run's module, built once by `lake build`."""
    root = tmp_path_factory.mktemp("lake")
    tree = lean_tree(root / "lean")
    runs = [materialize(s, root / "runs") for s in spec_names()]
    for r in runs:
        instantiate(r, tree)
    proc = subprocess.run([LAKE, "build"], cwd=tree, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return tree, runs


def _lake_check(tree: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LAKE, "exe", "blockcert_check", str(path)], cwd=tree, capture_output=True, text=True,
                          check=False)


@needs_lake
def test_lake_build_checks_generated_modules(built_tree):
    tree, runs = built_tree
    assert runs and all((tree / "BlockCert" / "Runs" / f"{fixture_module(r)}.lean").is_file() for r in runs)


@needs_lake
def test_lake_build_rejects_a_violating_module(built_tree, tmp_path):
    tree, _ = built_tree
    bad = replace(example_run(), claimed_bound=Fraction(1, 64))  # below the computed bound
    path = tree / "BlockCert" / "Runs" / "Violating_claim.lean"
    path.write_text(render_module(bad, "Violating_claim"), encoding="utf-8")
    try:
        proc = subprocess.run([LAKE, "build"], cwd=tree, capture_output=True, text=True, check=False)
        assert proc.returncode != 0
        assert "run_check" in proc.stdout + proc.stderr
    finally:
        path.unlink()


@needs_lake
def test_lake_exe_prints_what_blockcert_check_prints(built_tree, cli):
    tree, runs = built_tree
    inputs = [FIXTURES / "example_run.json", *sorted((FIXTURES / "violations").glob("*.json")), *runs]
    for path in inputs:
        lean = _lake_check(tree, path)
        py = cli("check", path)
        assert (lean.returncode, lean.stdout) == (py.code, py.out), path


@needs_lake
def test_lake_exe_exit_2_on_ill_formed_input(built_tree, tmp_path):
    tree, _ = built_tree
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "blockcert.formal/1", "policy": {}}', encoding="utf-8")
    proc = _lake_check(tree, bad)
    assert proc.returncode == 2 and "ill-formed formal run: policy.alpha_act" in proc.stderr


@needs_lake
def test_leanclient_diagnostics_are_clean(built_tree):
    from blockcert.workflows.lean import lean_diagnostics

    tree, runs = built_tree
    name = fixture_module(runs[0])
    ok, lines = lean_diagnostics(tree, Path("BlockCert") / "Runs" / f"{name}.lean")
    assert ok and not [line for line in lines if ": error:" in line], lines


def test_write_formal_then_module_copy_is_checked_by_verify(tmp_path):
    """A module copy edited by hand beside the run is reported (the run's own numbers still pass)."""
    from blockcert.verifier.formal import formal_problems

    run_dir = materialize("carried", tmp_path / "runs")
    instantiate(run_dir, lean_tree(tmp_path / "lean"))
    assert formal_problems(run_dir) == []
    name = fixture_module(run_dir)
    copy = run_dir / f"{name}.lean"
    copy.write_text(copy.read_text(encoding="utf-8").replace("actCovered := 70", "actCovered := 74"))
    assert formal_problems(run_dir) == [
        f"{name}.lean differs from the module generated from the run's certificates: rerun `blockcert lean`"
    ]
    write_formal(run_dir / "formal_run.json", replace(build_formal(run_dir).run, claimed_bound=Fraction(1)))
    assert "formal_run.json differs" in formal_problems(run_dir)[0]


def test_another_runs_module_is_never_overwritten(tmp_path):
    """Two runs of the same name (issue 11, case 6) get two modules, told apart by their run ids; a file at a run's
    module path that is not that run's module is refused, never replaced."""
    from .test_verify import reseal

    tree = lean_tree(tmp_path / "lean")
    a = materialize("carried", tmp_path / "one")
    b = materialize("carried", tmp_path / "two")
    reseal(b, 1, lambda d: d["metrics"].update(mae=1e-5))  # same run name, other certificates: another run id
    ma, mb = instantiate(a, tree), instantiate(b, tree)
    assert ma != mb and ma.stem[:-9] == mb.stem[:-9] == "Tiny_fixture_carried"
    assert ma.is_file() and mb.is_file()
    instantiate(a, tree)  # the same run again: fine
    ma.write_text("-- someone else's module\nnamespace BlockCert.Runs.Other\n", encoding="utf-8")
    with pytest.raises(BlockCertError, match="is not this run's module"):
        instantiate(a, tree)
