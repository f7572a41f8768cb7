"""`blockcert report RUN_DIR [--out FILE.html]`: one self-contained HTML report of a run, verified when made.

The verifier runs first (`verify_run`, the same checks as `blockcert verify`), and its verdict heads the
report: a run is shown as verified only when every check holds; a copy that ships certificates without
their tensors is shown as not verified, saying so; anything else is shown as failed, in red, with the
verifier's lines. Every other section reads its files through the certified readers, so a tampered file is
left out with its reason rather than shown. Plots are PNGs written beside the report and embedded in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blockcert.errors import BlockCertError
from blockcert.present.progress import say
from blockcert.present.report_html import render
from blockcert.present.report_plots import BlockBar, block_bars, prompt_epsilon_map, size_vs_error
from blockcert.present.report_view import BlockRow, Image, ReportView, StatusRow, Table, Verification
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary
from blockcert.store.files import atomic_write_bytes, ensure_writable_dir
from blockcert.store.manifest import record_outputs
from blockcert.store.run_reader import block_certificate, load_certified_prompt_epsilons, load_run_summary
from blockcert.verifier.report import RunReport
from blockcert.verifier.run import verify_run
from blockcert.version import __version__
from blockcert.workflows.report_sections import full_model_section, lean_section, studies_section
from blockcert.workflows.report_tokens import (
    block_errors,
    certified_prompts,
    missing_tensors,
    token_section,
    token_texts,
)

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class ReportResult:
    path: Path
    plots: tuple[Path, ...]
    state: str  # verified | incomplete | failed
    headline: str


def write_report(run_dir: Path | str, out: Path | str | None = None, model: str | None = None) -> Path:
    """Write RUN_DIR/report.html (or `out`) and its PNG plots beside it; returns the report's path."""
    return build_report(Path(run_dir), None if out is None else Path(out), model).path


def report_path(run_dir: Path, out: Path | None) -> Path:
    path = run_dir / REPORT_FILE if out is None else out
    if path.suffix.lower() not in (".html", ".htm"):
        raise BlockCertError(f"--out {path}: the report is an HTML file; give a name ending in .html")
    if path.is_dir():
        raise BlockCertError(f"--out {path} is a directory; give a file name ending in .html")
    ensure_writable_dir(path.parent)
    return path


def build_report(run_dir: Path, out: Path | None = None, model: str | None = None) -> ReportResult:
    if not run_dir.is_dir():
        raise BlockCertError(f"run directory {run_dir} does not exist")
    path = report_path(run_dir, out)
    view = gather(run_dir, path, model)
    plots = []
    for img in view.images():
        plots.append(path.parent / f"{path.stem}_{img.name}.png")
        atomic_write_bytes(plots[-1], img.png)
    atomic_write_bytes(path, render(view).encode("utf-8"))  # the report last: it names its plots' run
    if path.parent.resolve() == run_dir.resolve():
        # a report inside the run is one of its files: listed, so that `blockcert verify` afterwards still passes
        record_outputs(run_dir, [p.name for p in (*plots, path)])
    say(f"wrote {path} ({len(plots)} plot(s) beside it)")
    return ReportResult(path, tuple(plots), view.verification.state, view.verification.headline)


# ---------------------------------------------------------------- verification


def _missing_line(line: str, absent: set[str]) -> bool:
    """A verifier line that only says a tensor file of this copy is absent."""
    return "missing" in line.lower() and any(rel in line for rel in absent)


def verification(rep: RunReport, absent: set[str]) -> Verification:
    rows = []
    for b in rep.blocks:
        state = "ok" if b.ok else ("missing" if all(_missing_line(e, absent) for e in b.errors) else "fail")
        rows.append(StatusRow(f"block {b.index}", state, tuple(b.errors)))
    run_state = "ok" if not rep.errors else (
        "missing" if all(_missing_line(e, absent) for e in rep.errors) else "fail")
    rows.append(StatusRow("run (summary, full-model certificate, bound, formal record)", run_state,
                          tuple(rep.errors)))
    lines = rep.lines()
    if rep.ok:
        return Verification("verified", f"VERIFIED: every check of `blockcert verify` holds "
                                        f"({len(rep.blocks)} block certificate(s) and the run's records).", tuple(rows))
    if all(r.state != "fail" for r in rows):
        return Verification("incomplete", (
            f"NOT VERIFIED: tensors not shipped with this copy. {len(lines)} verifier finding(s), each a tensor file "
            f"the certificates list that this copy does not hold ({len(absent)} file(s)); without them the surrogates "
            "cannot be replayed on their traces. The verifier reports nothing else: the certificate-level checks "
            "hold."), tuple(rows))
    bad = sum(not _missing_line(line, absent) for line in lines)
    return Verification("failed", f"FAILED: the verifier found {bad} problem(s); this run is not valid as it stands.",
                        tuple(rows))


# ---------------------------------------------------------------- header and blocks


def _header(run_dir: Path, s: RunSummary, certs: dict[int, BlockCertificate]) -> tuple[tuple[str, str], ...]:
    m, p = s.model, s.prompts
    tools = sorted({f"{c.tool.name} {c.tool.version}, interpreter {c.tool.interpreter}" for c in certs.values()})
    return (
        ("run directory", str(run_dir)),
        ("model", f"{m.name} ({m.architecture}, family {m.family}, {m.num_layers} layers, {m.dtype}, {m.device})"),
        ("model source", m.source),
        ("weights SHA-256", m.weights_sha256),
        ("prompt set", f"'{p.name}': {p.description} ({p.n_prompts} prompts, {p.n_tokens} tokens)"),
        ("prompt SHA-256 (texts / token ids)", f"{p.sha256} / {p.token_ids_sha256}"),
        ("thresholds", f"τ_act = {s.thresholds.tau_act:g}, τ_loss = {s.thresholds.tau_loss:g}"),
        ("policy", f"certified needs cov_act ≥ {s.policy.alpha_act:g} and cov_loss ≥ {s.policy.alpha_loss:g}"),
        ("certificates made by", "; ".join(tools) or "n/a"),
        ("blocks", f"{len(s.blocks)} with surrogates, {sum(b.certified for b in s.blocks)} certified"),
    )


def _certificates(run_dir: Path, s: RunSummary) -> tuple[dict[int, BlockCertificate], dict[int, str]]:
    certs, unreadable = {}, {}
    for e in s.blocks:
        try:
            certs[e.index] = block_certificate(run_dir, s, e.index)
        except BlockCertError as err:
            unreadable[e.index] = str(err)
    return certs, unreadable


def _block_rows(s: RunSummary, certs: dict[int, BlockCertificate], unreadable: dict[int, str],
                v: Verification) -> tuple[BlockRow, ...]:
    state = {int(r.what.split()[1]): r.state for r in v.rows if r.what.startswith("block ")}
    rows = []
    for e in s.blocks:
        c = certs.get(e.index)
        if c is None:  # numbers from summary.json, marked: the certificate itself cannot be read as certified
            rows.append(BlockRow(e.index, e.certified, e.epsilon, e.mae, e.max_relative_error, e.cov_act, e.cov_path,
                                 e.cov_loss, (), state.get(e.index, "fail"),
                                 f"from summary.json; the certificate is refused: {unreadable[e.index]}"))
            continue
        m = c.metrics
        rows.append(BlockRow(e.index, c.certified, m.epsilon, m.mae, m.max_relative_error, m.cov_act, m.cov_path,
                             m.cov_loss, tuple(c.reasons), state.get(e.index, "fail")))
    return tuple(rows)


def _size_table(certs: dict[int, BlockCertificate]) -> tuple[Table | None, Image | None]:
    """Surrogate size beside fidelity, read generically: every numeric field of a certificate's `size` section."""
    sized = {i: getattr(c, "size", None) for i, c in certs.items()}
    sized = {i: (z.model_dump(mode="json") if hasattr(z, "model_dump") else z) for i, z in sized.items() if z}
    sized = {i: z for i, z in sized.items() if isinstance(z, dict)}
    if not sized:
        return None, None
    keys = [k for k in next(iter(sized.values())) if all(isinstance(z.get(k), int | float) and not
                                                         isinstance(z.get(k), bool) for z in sized.values())]
    text = [k for k in next(iter(sized.values())) if all(isinstance(z.get(k), str) for z in sized.values())]
    idx = sorted(sized)
    rows = tuple((str(i), *(str(sized[i][k]) for k in text), *(format(sized[i][k], ".4g") for k in keys),
                  format(certs[i].metrics.epsilon, ".4g") if certs[i].metrics.epsilon is not None else "n/a")
                 for i in idx)
    table = Table("Surrogate size next to fidelity", "How big each surrogate is, beside the error it costs.",
                  ("block", *text, *keys, "ε"), rows, "the certificates' size sections")
    key = next((k for k in keys if "ratio" in k), keys[0] if keys else None)
    img = None
    if key:
        img = Image("size", f"surrogate {key} beside log10 ε", size_vs_error(
            idx, [float(sized[i][key]) for i in idx], key, [certs[i].metrics.epsilon for i in idx]))
    return table, img


def _prompt_map(run_dir: Path, s: RunSummary, certs: dict[int, BlockCertificate]) -> tuple[Image | None, list[str]]:
    rows, notes = {}, []
    for i, c in sorted(certs.items()):
        try:
            rows[i] = load_certified_prompt_epsilons(run_dir, c)
        except BlockCertError as e:
            notes.append(f"per-prompt ε of block {i} not shown: {e}")
    if not rows or len({len(r) for r in rows.values()}) != 1:
        return None, notes
    png = prompt_epsilon_map(list(rows), list(rows.values()), s.thresholds.tau_act)
    return Image("prompt_eps", "ε of each block on each prompt", png, "from the certified per-prompt metrics"), notes


# ---------------------------------------------------------------- the whole report


def gather(run_dir: Path, out: Path, model: str | None) -> ReportView:
    say(f"verifying {run_dir} (the checks of `blockcert verify`)")
    rep = verify_run(run_dir)
    generator = f"Made by blockcert {__version__}; the verification below was computed when this report was made."
    try:
        s = load_run_summary(run_dir)
    except BlockCertError as e:
        v = verification(rep, set())
        return ReportView(f"BlockCert report: {run_dir.name}", (("run directory", str(run_dir)),), v, (), (), None,
                          (), None, None, (), None, (f"nothing else can be shown: {e}",), generator)
    certs, unreadable = _certificates(run_dir, s)
    absent = {rel for c in certs.values() for rel in missing_tensors(run_dir, c)}
    v = verification(rep, absent)
    notes = []
    blocks = _block_rows(s, certs, unreadable, v)
    plots = [Image("blocks", "per-block error and coverage against the thresholds", block_bars(
        [BlockBar(b.index, b.epsilon, b.mae, b.cov_act, b.cov_path, b.cov_loss) for b in blocks],
        s.thresholds.tau_act, s.policy.alpha_act, s.policy.alpha_loss))] if blocks else []
    size_table, size_img = _size_table(certs)
    prompt_img, prompt_notes = _prompt_map(run_dir, s, certs)
    plots += [i for i in (size_img, prompt_img) if i]
    notes += prompt_notes
    try:
        prompts = certified_prompts(run_dir, s)
        texts = prompts.texts
    except BlockCertError as e:
        prompts, texts = None, ()
        notes.append(f"prompts and per-token errors not shown: {e}")
    tokens = None
    if prompts is not None and certs:
        errors, token_notes = block_errors(run_dir, certs)
        shown, decode_note = token_texts(s, prompts, model)
        as_ids = model is None or decode_note is not None
        tokens = token_section(errors, prompts.texts, shown, s.thresholds.tau_act, as_ids,
                               token_notes + ([decode_note] if decode_note else []))
    say("reading the stitched model, bounds, studies and Lean module")
    full, full_notes = full_model_section(run_dir, out.parent / f"{out.stem}_bound_ratio.png")
    lean, lean_notes = lean_section(run_dir)
    return ReportView(
        title=f"BlockCert report: {s.model.name} on '{s.prompts.name}' ({run_dir.name})",
        header=_header(run_dir, s, certs), verification=v, blocks=blocks, block_plots=tuple(plots),
        size_table=size_table, prompt_texts=texts, tokens=tokens, full_model=full,
        studies=tuple(studies_section(run_dir, s)), lean=lean, notes=tuple(notes + full_notes + lean_notes),
        generator=generator,
    )
