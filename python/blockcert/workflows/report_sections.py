"""The run-level sections of `blockcert report`: the stitched model (and its bounds), the studies, the Lean module.

Each reads its files through the certified readers and returns a view, or None when the run holds no such
file; a file that is present but fails its checks yields a section that says so (the verifier's lines
in the header say why), never a section that looks valid.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from pydantic import ValidationError

from blockcert.core.digest import sha256_bytes
from blockcert.errors import BlockCertError
from blockcert.formal.lean import comment_text
from blockcert.formal.mirror import FORMAL_FILE, check
from blockcert.present.bounds import _LABEL as BOUND_LABELS
from blockcert.present.bounds import plot as bound_ratio_plot
from blockcert.present.bounds import sci_log10
from blockcert.present.formal import report_lines
from blockcert.present.report_plots import LayerPoint, deviation_curve
from blockcert.present.report_view import FullModel, Image, LeanView, Table
from blockcert.records.bound import BOUND_FILE, BoundArtifact
from blockcert.records.fullmodel import CERTIFICATE_FILE, EVALUATION_FILE, FullModelCertificate, FullModelEvaluation
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.files import read_json, resolve_inside
from blockcert.store.formal_json import read_formal
from blockcert.store.run_reader import load_bound_artifact, load_full_certificate
from blockcert.workflows.lean import REPO_ROOT, RUNS_DIR
from blockcert.workflows.report_studies import STUDIES, certificate_digests, study_table


def _g(x: float | None, fmt: str = ".6g") -> str:
    return "n/a" if x is None else format(x, fmt)


def load_full(run_dir: Path) -> tuple[FullModelCertificate, FullModelEvaluation]:
    """The full-model certificate and the evaluation it hashes, parsed from exactly the bytes hashed."""
    cert = load_full_certificate(run_dir)
    data = _read(run_dir, cert.evaluation_file)
    if sha256_bytes(data) != cert.evaluation_sha256:
        raise BlockCertError(f"{cert.evaluation_file} changed since stitching; rerun `blockcert stitch`")
    try:
        return cert, FullModelEvaluation.model_validate_json(data)
    except ValidationError as e:
        raise BlockCertError(f"{cert.evaluation_file} does not match its schema ({e.errors()[0]['msg']})") from None


def _read(run_dir: Path, rel: str) -> bytes:
    try:
        return resolve_inside(run_dir, rel).read_bytes()
    except OSError as e:
        raise BlockCertError(f"{rel} cannot be read ({e.strerror or e})") from None


def _facts(c: FullModelCertificate) -> tuple[tuple[str, str], ...]:
    m, p = c.metrics, c.policy
    return (
        ("stitched blocks", f"{len(c.stitched_blocks)}: {', '.join(map(str, c.stitched_blocks))}"),
        ("perplexity", f"baseline {_g(m.baseline_ppl, '.10g')}, stitched {_g(m.stitched_ppl, '.10g')}"),
        ("|ΔPPL|/PPL", f"{_g(m.relative_delta_ppl, '.3g')} (policy ≤ {p.max_relative_delta_ppl:g})"),
        ("next-token agreement", f"{m.next_token_agreed}/{m.next_token_positions} ({m.next_token_agreement:.6f}; "
                                 f"policy ≥ {p.min_next_token_agreement:g})"),
        ("measured deviation max ‖x̂_L − x_L‖₂", _g(m.measured_deviation, ".4g")),
        ("per-layer MAE", f"mean {_g(m.mean_layer_mae, '.4g')}; worst layer {m.worst_layer} "
                          f"({_g(m.worst_layer_mae, '.4g')})"),
        ("token losses", f"max |Δℓ| {_g(m.max_abs_loss_delta, '.3g')}, mean |Δℓ| {_g(m.mean_abs_loss_delta, '.3g')}"),
    )


def _bound_table(art: BoundArtifact) -> Table:
    rows = tuple(
        (BOUND_LABELS.get(kb.kind, kb.kind), "yes" if kb.sound else "no", sci_log10(kb.log10_bound),
         _g(art.measured_deviation, ".4g"), "n/a" if kb.log10_ratio is None else sci_log10(kb.log10_ratio))
        for kb in art.bounds
    )
    sound = [kb for kb in art.bounds if kb.sound and kb.log10_ratio is not None]
    best = min(sound, key=lambda kb: kb.log10_ratio, default=None)
    reading = ("Every bound is 0: the measured deviation is 0 too." if best is None and art.measured_deviation == 0
               else f"The tightest sound bound ({BOUND_LABELS.get(best.kind, best.kind)}) is "
                    f"{sci_log10(best.log10_ratio)}× the measured deviation; the formal check uses kind "
                    f"'{art.formal_kind}'." if best else "No sound bound has a finite ratio to the measurement.")
    return Table("Global bound Σ ε_i Π_(j>i) L_j of each kind", reading,
                 ("kind", "sound", "bound", "measured", "bound / measured"), rows, BOUND_FILE)


def full_model_section(run_dir: Path, ratio_png: Path) -> tuple[FullModel | None, list[str]]:
    """The stitched model's verdict, its per-layer deviation curve, and the bounds against it when bound.json exists.
    `ratio_png`: where present/bounds.py's ratio plot is written (beside the report)."""
    if not (run_dir / CERTIFICATE_FILE).exists():
        return None, [f"no {CERTIFICATE_FILE}: the run was not stitched (`blockcert stitch RUN_DIR`)"]
    try:
        cert, ev = load_full(run_dir)
    except BlockCertError as e:
        return None, [f"stitched model not shown: {e}"]
    notes, art = [], None
    if (run_dir / BOUND_FILE).exists():
        try:
            art = load_bound_artifact(run_dir)
        except BlockCertError as e:
            notes.append(f"bounds not shown: {e}")
    else:
        notes.append(f"no {BOUND_FILE}: bound the run with `blockcert bound RUN_DIR` to see the bounds here")
    layers = [LayerPoint(la.layer, la.stitched, la.mae, la.max_token_error) for la in ev.layers]
    prefix = {kb.kind: kb.prefix_log10_bound for kb in art.bounds} if art else {}
    sound = {kb.kind: kb.sound for kb in art.bounds} if art else {}
    curve = Image("deviation", "per-layer deviation of the stitched model" + (" and the bound of each kind" if art
                                                                               else ""),
                  deviation_curve(layers, prefix, sound),
                  f"from {EVALUATION_FILE}" + (f" and {BOUND_FILE} (solid: sound kinds; dashed: measured ones)"
                                               if art else ""))
    ratio = None
    if art:
        ratio = Image("bound_ratio", "bound / measured against the number of stitched blocks",
                      bound_ratio_plot(art, ratio_png).read_bytes(), "the plot `blockcert bound` draws")
    view = FullModel(cert.certified, tuple(cert.reasons), _facts(cert), curve,
                     _bound_table(art) if art else None, ratio, tuple(notes))
    return view, []


# ---------------------------------------------------------------- studies

_NOT_STUDIES = {layout.SUMMARY, layout.PROMPTS, CERTIFICATE_FILE, EVALUATION_FILE, BOUND_FILE, FORMAL_FILE}


def studies_section(run_dir: Path, summary: RunSummary) -> list[Table]:
    """A table for every study file of the run, in file-name order; stale or unreadable ones say so."""
    current = {e.index: e.digest for e in summary.blocks}
    semantic_rec = None
    # An unreadable certificate: the header's verifier lines say why; the probe is then marked as unrecorded.
    with contextlib.suppress(BlockCertError):
        if (run_dir / CERTIFICATE_FILE).exists():
            semantic_rec = load_full_certificate(run_dir).semantic
    out = []
    for path in sorted(run_dir.glob("*.json")):
        if path.name in _NOT_STUDIES:
            continue
        try:
            data = _read(run_dir, path.name)
            obj = read_json(path, path.name)
        except BlockCertError as e:
            out.append(Table(path.name, f"could not be read: {e}", (), (), path.name))
            continue
        schema = obj.get("schema_version") if isinstance(obj, dict) else None
        study = STUDIES.get(schema) if isinstance(schema, str) else None
        if study is None:
            out.append(Table(path.name, f"a file with schema {schema!r}, which this report has no section for: listed, "
                                        "not rendered", (), (), path.name))
            continue
        try:
            record = study.schema.model_validate(obj)
        except ValidationError as e:
            out.append(Table(f"{study.title}: {path.name}", f"does not match its schema ({e.errors()[0]['msg']})",
                             (), (), path.name))
            continue
        notes = []
        stale = sorted(i for i, d in certificate_digests(record).items() if current.get(i) != d)
        if stale:
            notes.append(f"computed from other certificates of block(s) {', '.join(map(str, stale))} than the run's "
                         "current ones (stale): rerun the study")
        if study.schema_version == "blockcert.semantic-probe-eval/1":
            if semantic_rec is None or semantic_rec.file != path.name:
                notes.append("not recorded in the full-model certificate")
            elif semantic_rec.file_sha256 != sha256_bytes(data):
                notes.append("changed since the full-model certificate recorded it (SHA-256 mismatch)")
        out.append(study_table(study, record, path.name, tuple(notes)))
    return out


# ---------------------------------------------------------------- Lean

_THEOREM = re.compile(r"^theorem (\w+).*?:=", re.MULTILINE | re.DOTALL)


def _theorem(text: str) -> str:
    """The statement of the module's main theorem: the instantiated bound when stated, else `check run = true`."""
    found = {m.group(1): m.group(0).rstrip(":=").rstrip() for m in _THEOREM.finditer(text)}
    return found.get("global_bound") or found.get("run_check") or "(no theorem found in the module)"


def find_module(run_dir: Path, run_name: str) -> Path | None:
    """The run's generated module: beside the run first, then in the project's BlockCert/Runs/. Found by its
    first line, which names the run (the file name's scheme is the Lean bridge's business, not the report's)."""
    head = f"-- Generated by blockcert.bridge from {comment_text(run_name)};"
    for folder in (run_dir, REPO_ROOT / RUNS_DIR):
        for path in sorted(folder.glob("*.lean")) if folder.is_dir() else ():
            with open(path, encoding="utf-8", errors="replace") as f:
                if f.readline().startswith(head):
                    return path
    return None


def lean_section(run_dir: Path) -> tuple[LeanView | None, list[str]]:
    if not (run_dir / FORMAL_FILE).exists():
        return None, [f"no {FORMAL_FILE}: no Lean module was generated (`blockcert lean RUN_DIR`)"]
    try:
        run = read_formal(run_dir / FORMAL_FILE)
    except BlockCertError as e:
        return None, [f"Lean section not shown: {e}"]
    found = find_module(run_dir, run.name)
    if found is None:
        module, theorem = f"none found beside the run or in {RUNS_DIR} (`blockcert lean RUN_DIR` writes it)", "(none)"
    else:
        module, theorem = str(found), _theorem(found.read_text(encoding="utf-8"))
    return LeanView(module, theorem, check(run), tuple(report_lines(run))), []
