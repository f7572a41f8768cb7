"""`blockcert verify`: re-derive every number of a run from its files, trusting none of them.

Each check yields problems as single lines naming the block, the file or the field. Verification
needs only the run directory; with a model it also re-runs the native network, which re-derives the
traces and the loss coverage from scratch instead of from the recorded per-token losses.
"""

from __future__ import annotations

import math
from pathlib import Path

from blockcert.arch.loading import load_model
from blockcert.arch.native import NativeModel
from blockcert.arch.tracing import record_traces
from blockcert.core.batch import batch_from_token_ids
from blockcert.core.digest import canonical_json, sha256_bytes
from blockcert.core.ir import BlockIR
from blockcert.core.metrics import block_metrics, verdict
from blockcert.core.replay import replay
from blockcert.core.traces import BlockTrace, LossTrace
from blockcert.errors import BlockCertError
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.files import read_json, resolve_inside, sha256_file
from blockcert.store.records_io import load_model_file
from blockcert.store.tensors import load_ir, load_record
from blockcert.verifier.report import BlockReport, RunReport

REQUIRED = (layout.IR_SPEC, layout.IR_TENSORS, layout.TRACES, layout.LOSSES, layout.METRICS)






def _close(a: float | None, b: float | None, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol


def _check_artifacts(run_dir: Path, cert: BlockCertificate, rep: BlockReport) -> bool:
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
        except BlockCertError as e:
            rep.errors.append(str(e))
            continue
        if not path.is_file():
            rep.errors.append(f"artifact {relpath} is missing")
        elif sha256_file(path) != digest:
            rep.errors.append(f"artifact {relpath}: SHA-256 mismatch (file changed since certification)")
    return rep.ok


def _check_prompts(run_dir: Path, cert: BlockCertificate, rep: BlockReport) -> None:
    data = read_json(run_dir / layout.PROMPTS, "prompts file")
    if sha256_bytes(canonical_json(list(data.get("prompts", []))).encode()) != cert.prompts.sha256:
        rep.errors.append("prompts.json texts do not hash to certificate field prompts.sha256")
    if sha256_bytes(canonical_json(data.get("token_ids", [])).encode()) != cert.prompts.token_ids_sha256:
        rep.errors.append("prompts.json token ids do not hash to certificate field prompts.token_ids_sha256")


def _check_metrics(cert: BlockCertificate, ir: BlockIR, trace: BlockTrace, loss: LossTrace, rep: BlockReport):
    r = replay(ir, trace)
    m = block_metrics(
        r.errors, r.out_norms, trace.valid, r.path_ok, loss.base_nll, loss.stitched_nll, loss.loss_ok,
        cert.thresholds,
    )
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
    return r


def _check_verdict(cert: BlockCertificate, rep: BlockReport) -> None:
    ok, reasons = verdict(cert.metrics, cert.policy)
    if ok != cert.certified:
        rep.errors.append(
            f"verdict: certificate says certified={cert.certified} but its metrics and policy give {ok}"
        )
    elif tuple(reasons) != cert.reasons:
        rep.errors.append("verdict: recorded reasons do not match the metrics and policy")


def verify_block(run_dir: Path, cert_path: Path, index: int, expected_digest: str | None) -> BlockReport:
    rep = BlockReport(index)
    try:
        cert = load_model_file(cert_path, BlockCertificate, "certificate")
    except BlockCertError as e:
        rep.errors.append(str(e))
        return rep
    if cert.body_digest() != cert.digest:
        rep.errors.append(f"{layout.rel(run_dir, cert_path)}: digest does not match its contents (edited?)")
    if expected_digest is not None and expected_digest != cert.digest:
        rep.errors.append("summary.json records a different certificate digest")
    if cert.block_index != index:
        rep.errors.append(f"certificate is for block {cert.block_index}, found in the directory of block {index}")
    _check_verdict(cert, rep)
    if not _check_artifacts(run_dir, cert, rep):
        return rep  # the files cannot be trusted: recomputing from them proves nothing
    try:
        _check_prompts(run_dir, cert, rep)
        bdir = layout.block_dir(run_dir, index)
        ir = load_ir(bdir)
        trace, loss = load_record(bdir / layout.TRACES, BlockTrace), load_record(bdir / layout.LOSSES, LossTrace)
        _check_metrics(cert, ir, trace, loss, rep)
        recorded = read_json(bdir / layout.METRICS, "metrics file").get("metrics")
        if recorded != cert.metrics.model_dump(mode="json"):
            rep.errors.append(f"{cert.metrics_file}: metrics differ from the certificate's")
    except BlockCertError as e:
        rep.errors.append(str(e))
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
    data = read_json(run_dir / layout.PROMPTS, "prompts file")
    batch = batch_from_token_ids(data["token_ids"])
    by_index = {b.index: b for b in report.blocks}
    indices = [i for i in (e.index for e in summary.blocks) if by_index[i].ok]
    irs = {i: load_ir(layout.block_dir(run_dir, i)) for i in indices}
    fresh_traces, fresh_losses = record_traces(NativeModel(lm), batch, indices, irs, 8)
    for i in indices:
        rep, bdir = by_index[i], layout.block_dir(run_dir, i)
        cert = load_model_file(bdir / layout.CERTIFICATE, BlockCertificate, "certificate")
        trace, loss = load_record(bdir / layout.TRACES, BlockTrace), load_record(bdir / layout.LOSSES, LossTrace)
        atol = cert.tolerances.replay_atol
        for name in ("x_in", "x_out"):
            diff = (getattr(fresh_traces[i], name).double() - getattr(trace, name).double()).norm(dim=-1)
            worst = float(diff[trace.valid].max())
            if not worst <= atol:
                rep.errors.append(f"traces.{name} differ from a fresh native run by {worst:.3g} > {atol:.3g}")
        for name in ("base_nll", "stitched_nll"):
            f, r = getattr(fresh_losses[i], name), getattr(loss, name)
            worst = float((f - r).abs()[loss.loss_ok].max()) if bool(loss.loss_ok.any()) else 0.0
            if not worst <= cert.tolerances.loss_atol:
                rep.errors.append(
                    f"losses.{name} differ from a fresh native run by {worst:.3g} > {cert.tolerances.loss_atol:.3g}"
                )


