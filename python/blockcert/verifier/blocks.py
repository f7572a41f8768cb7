"""`blockcert verify`: re-derive every number of a run from its files, trusting none of them.

Each check yields problems as single lines naming the block, the file or the field. Verification
needs only the run directory; with a model it also re-runs the native network, which re-derives the
traces and the loss coverage from scratch instead of from the recorded per-token losses.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from blockcert.arch.loading import load_model
from blockcert.arch.native import NativeModel
from blockcert.arch.tracing import record_traces
from blockcert.core.batch import batch_from_token_ids
from blockcert.core.digest import sha256_bytes
from blockcert.core.ir import BlockIR
from blockcert.core.metrics import block_metrics, per_prompt_metrics, verdict
from blockcert.core.replay import replay
from blockcert.core.traces import BlockTrace, LossTrace
from blockcert.errors import BlockCertError
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import BlockEntry, RunSummary, disagreements
from blockcert.store import layout
from blockcert.store.files import resolve_inside
from blockcert.store.records_io import parse_model
from blockcert.store.run_reader import (
    MAX_ARTIFACT_BYTES,
    certified_bytes,
    certified_token_ids,
    load_certified_ir,
    load_certified_traces,
)
from blockcert.store.strict_json import parse_strict, read_regular
from blockcert.verifier.report import BlockReport, RunReport


class MetricsFile(BaseModel):
    """block_NNN/metrics.json's shape: its rows are compared field by field with the re-derived ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    block_index: int
    metrics: dict
    per_prompt: list[dict]

REQUIRED = (layout.IR_SPEC, layout.IR_TENSORS, layout.TRACES, layout.LOSSES, layout.METRICS)


def _close(a: float | None, b: float | None, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol


def _check_artifacts(run_dir: Path, summary: RunSummary, cert: BlockCertificate, rep: BlockReport) -> bool:
    listed = set(cert.artifacts)
    prefix = f"block_{cert.block_index:03d}/"
    for name in REQUIRED:
        if prefix + name not in listed:
            rep.errors.append(f"certificate does not list required artifact {prefix + name}")
    if layout.PROMPTS not in listed:
        rep.errors.append(f"certificate does not list required artifact {layout.PROMPTS}")
    for relpath, digest in sorted(cert.artifacts.items()):
        try:
            path = resolve_inside(run_dir, relpath)
            if relpath != layout.PROMPTS and not relpath.startswith(prefix):
                rep.errors.append(f"certificate field artifacts lists {relpath[:80]!r}, outside its block directory")
                continue
            if not path.exists():
                rep.errors.append(f"artifact {relpath} is missing")
                continue
            data = read_regular(path, f"artifact {relpath}", MAX_ARTIFACT_BYTES)
        except BlockCertError as e:
            rep.errors.append(str(e))
            continue
        if sha256_bytes(data) != digest:
            rep.errors.append(f"artifact {relpath}: SHA-256 mismatch (file changed since certification)")
        elif summary.files.get(relpath) != digest:
            rep.errors.append(f"artifact {relpath}: summary.json field files[{relpath!r}] does not record it")
    return rep.ok


def _check_metrics(cert: BlockCertificate, ir: BlockIR, trace: BlockTrace, loss: LossTrace, rep: BlockReport):
    r = replay(ir, trace)
    args = (r.errors, r.out_norms, trace.valid, r.path_ok, loss.base_nll, loss.stitched_nll, loss.loss_ok)
    m = block_metrics(*args, cert.thresholds)
    c, atol = cert.metrics, cert.tolerances.replay_atol
    for name in ("n_tokens", "nonfinite_tokens", "path_matched", "n_loss_tokens"):
        if getattr(m, name) != getattr(c, name):
            rep.errors.append(f"metrics.{name}: certificate says {getattr(c, name)}, recomputed {getattr(m, name)}")
    for name in ("epsilon", "mae"):
        if not _close(getattr(m, name), getattr(c, name), atol):
            rep.errors.append(f"metrics.{name}: certificate says {getattr(c, name)}, recomputed {getattr(m, name)}")
    # Tokens whose error lies within float rounding of τ_act may land either side on another machine.
    e = r.errors[trace.valid]
    borderline = int(((e - cert.thresholds.tau_act).abs() <= atol).sum())
    if abs(m.act_covered - c.act_covered) > borderline:
        rep.errors.append(f"metrics.act_covered: certificate says {c.act_covered}, recomputed {m.act_covered}")
    if c.n_tokens and abs(c.cov_act - c.act_covered / c.n_tokens) > 1e-15:
        rep.errors.append("metrics.cov_act is not act_covered / n_tokens")
    if c.n_tokens and abs(c.cov_path - c.path_matched / c.n_tokens) > 1e-15:
        rep.errors.append("metrics.cov_path is not path_matched / n_tokens")
    for name in ("loss_covered_weight", "loss_total_weight", "cov_loss"):
        if not _close(getattr(m, name), getattr(c, name), 1e-12 * max(1.0, abs(getattr(c, name)))):
            rep.errors.append(f"metrics.{name}: certificate says {getattr(c, name)}, recomputed {getattr(m, name)}")
    return per_prompt_metrics(*args, cert.thresholds)


def _check_metrics_file(run_dir: Path, cert: BlockCertificate, fresh, rep: BlockReport) -> None:
    """metrics.json: its summary is the certificate's, and every per-prompt row is re-derived from the replay."""
    what = f"{cert.metrics_file}"
    try:
        data = parse_strict(certified_bytes(run_dir, cert, layout.METRICS))
        recorded = MetricsFile.model_validate(data, strict=False)
    except (BlockCertError, ValidationError) as e:
        rep.errors.append(f"{what}: {str(e).splitlines()[0]}")
        return
    if recorded.block_index != cert.block_index:
        rep.errors.append(f"{what}: field block_index = {recorded.block_index}, the certificate's is "
                          f"{cert.block_index}")
    if recorded.metrics != cert.metrics.model_dump(mode="json"):
        rep.errors.append(f"{what}: field metrics differs from the certificate's")
    if len(recorded.per_prompt) != len(fresh):
        rep.errors.append(f"{what}: field per_prompt has {len(recorded.per_prompt)} rows, the traces "
                          f"{len(fresh)} prompts")
        return
    atol = cert.tolerances.replay_atol
    for row, m in zip(recorded.per_prompt, fresh, strict=True):
        for name in ("prompt", "n_tokens"):
            if row.get(name) != getattr(m, name):
                rep.errors.append(f"{what}: field per_prompt[{m.prompt}].{name} = {row.get(name)!r}, recomputed "
                                  f"{getattr(m, name)}")
        for name in ("epsilon", "mae"):
            v = row.get(name)
            if not (v is None or isinstance(v, float | int)) or not _close(v, getattr(m, name), atol):
                rep.errors.append(f"{what}: field per_prompt[{m.prompt}].{name} = {v!r}, recomputed {getattr(m, name)}")
        for name in ("cov_act", "cov_path", "cov_loss"):
            v = row.get(name)
            # a borderline token may flip on another machine: one token of the prompt's count
            slack = 1.0 / max(m.n_tokens, 1) + 1e-12
            if not isinstance(v, float | int) or not _close(v, getattr(m, name), slack):
                rep.errors.append(f"{what}: field per_prompt[{m.prompt}].{name} = {v!r}, recomputed {getattr(m, name)}")


def _check_trace_storage(cert: BlockCertificate, rep: BlockReport) -> None:
    """A declared trace dtype is the model's own or a narrower float; the rounding of the model's own is 0."""
    if cert.trace_dtype is None:
        return
    r = cert.trace_rounding
    if not (math.isfinite(r.x_in) and math.isfinite(r.x_out)):
        rep.errors.append("field trace_rounding is not finite")
    elif cert.trace_dtype == cert.model.dtype and (r.x_in or r.x_out):
        rep.errors.append(f"field trace_rounding is nonzero, but traces stored in the model's own dtype "
                          f"{cert.model.dtype} are not rounded")


def _check_verdict(cert: BlockCertificate, rep: BlockReport) -> None:
    ok, reasons = verdict(cert.metrics, cert.policy)
    if ok != cert.certified:
        rep.errors.append(
            f"verdict: certificate says certified={cert.certified} but its metrics and policy give {ok}"
        )
    elif tuple(reasons) != cert.reasons:
        rep.errors.append("verdict: recorded reasons do not match the metrics and policy")


def read_certificate(run_dir: Path, summary: RunSummary, entry: BlockEntry,
                     rep: BlockReport) -> BlockCertificate | None:
    """The entry's certificate, strictly parsed, sealed, and agreeing with the manifest field by field."""
    try:
        path = resolve_inside(run_dir, entry.certificate)
        if not path.exists():
            rep.errors.append(f"{entry.certificate} is missing, but summary.json lists block {entry.index}")
            return None
        data = read_regular(path, "certificate")
        cert = parse_model(data, BlockCertificate, f"certificate {entry.certificate}")
    except BlockCertError as e:
        rep.errors.append(str(e))
        return None
    if entry.certificate != f"block_{entry.index:03d}/{layout.CERTIFICATE}":
        rep.errors.append(f"summary.json field blocks[{entry.index}].certificate = {entry.certificate!r} is not "
                          f"block_{entry.index:03d}/{layout.CERTIFICATE}")
    if cert.body_digest() != cert.digest:
        rep.errors.append(f"{entry.certificate}: field digest does not match its contents (edited?)")
    if summary.files.get(entry.certificate) != sha256_bytes(data):
        rep.errors.append(f"{entry.certificate}: summary.json field files[{entry.certificate!r}] does not record it")
    if cert.block_index != entry.index:
        rep.errors.append(f"{entry.certificate}: field block_index = {cert.block_index}, listed as block {entry.index}")
    rep.errors.extend(f"{entry.certificate}: {p}" for p in disagreements(summary, cert, entry))
    return cert


def verify_block(run_dir: Path, summary: RunSummary, entry: BlockEntry) -> BlockReport:
    rep = BlockReport(entry.index)
    cert = read_certificate(run_dir, summary, entry, rep)
    if cert is None:
        return rep
    _check_verdict(cert, rep)
    _check_trace_storage(cert, rep)
    if not _check_artifacts(run_dir, summary, cert, rep):
        return rep  # the files cannot be trusted: recomputing from them proves nothing
    try:
        ir = load_certified_ir(run_dir, cert)
        trace, loss = load_certified_traces(run_dir, cert, ir.spec)
    except BlockCertError as e:
        rep.errors.append(str(e))
        return rep
    try:
        fresh = _check_metrics(cert, ir, trace, loss, rep)
    except Exception as e:  # headers were validated; anything left is hostile input the interpreter rejects
        rep.errors.append(f"block_{entry.index:03d}: the surrogate cannot be replayed on its traces "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
        return rep
    _check_metrics_file(run_dir, cert, fresh, rep)
    return rep


def check_with_model(run_dir: Path, summary: RunSummary, report: RunReport, model: str) -> None:
    """Re-run the native model: traces and per-token losses must match the recorded ones."""

    report.loss_coverage_source = "recomputed from the model"
    lm = load_model(model, summary.model.dtype, summary.model.device)
    if lm.weights_sha256 != summary.model.weights_sha256:
        raise BlockCertError(
            f"model {model!r} has weights hash {lm.weights_sha256[:16]}…, the run was certified on "
            f"{summary.model.weights_sha256[:16]}…: not the same model"
        )
    batch = batch_from_token_ids(certified_token_ids(run_dir, summary))
    by_index = {b.index: b for b in report.blocks}
    indices = [i for i in (e.index for e in summary.blocks) if by_index[i].ok]
    certs = {e.index: read_certificate(run_dir, summary, e, BlockReport(e.index)) for e in summary.blocks
             if e.index in indices}
    irs = {i: load_certified_ir(run_dir, certs[i]) for i in indices}
    fresh_traces, fresh_losses = record_traces(NativeModel(lm), batch, indices, irs, 8)
    for i in indices:
        rep, cert = by_index[i], certs[i]
        trace, loss = load_certified_traces(run_dir, cert, irs[i].spec)
        atol = cert.tolerances.replay_atol
        rounding = cert.trace_rounding
        for name in ("x_in", "x_out"):
            diff = (getattr(fresh_traces[i], name).double() - getattr(trace, name).double()).norm(dim=-1)
            worst = float(diff[trace.valid].max())
            # Stored traces are the native ones rounded to the trace dtype: they differ from a fresh run by
            # the recorded rounding, to within the re-run's own float noise (each token moves by ≤ atol).
            r = 0.0 if rounding is None else getattr(rounding, name)
            if not abs(worst - r) <= atol:
                what = "" if rounding is None else f" (the certificate records a rounding of {r:.3g})"
                rep.errors.append(f"traces.{name} differ from a fresh native run by {worst:.3g}{what}, beyond "
                                  f"{atol:.3g}")
        for name in ("base_nll", "stitched_nll"):
            f, r = getattr(fresh_losses[i], name), getattr(loss, name)
            worst = float((f - r).abs()[loss.loss_ok].max()) if bool(loss.loss_ok.any()) else 0.0
            if not worst <= cert.tolerances.loss_atol:
                rep.errors.append(
                    f"losses.{name} differ from a fresh native run by {worst:.3g} > {cert.tolerances.loss_atol:.3g}"
                )
