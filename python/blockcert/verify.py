"""`blockcert verify`: re-derive every number of a run from its files, trusting none of them.

Each check yields problems as single lines naming the block, the file or the field. Verification
needs only the run directory; with a model it also re-runs the native network, which re-derives the
traces and the loss coverage from scratch instead of from the recorded per-token losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import layout
from .certificate import BlockCertificate, load_model_file
from .errors import BlockCertError
from .files import canonical_json, read_json, resolve_inside, sha256_bytes, sha256_file
from .ir import BlockIR
from .metrics import block_metrics, verdict
from .replay import replay
from .summary import RunSummary
from .traces import BlockTrace, LossTrace

REQUIRED = (layout.IR_SPEC, layout.IR_TENSORS, layout.TRACES, layout.LOSSES, layout.METRICS)


@dataclass
class BlockReport:
    index: int
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class RunReport:
    blocks: list[BlockReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loss_coverage_source: str = "recorded per-token losses"

    @property
    def ok(self) -> bool:
        return not self.errors and all(b.ok for b in self.blocks)

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "loss_coverage_source": self.loss_coverage_source,
            "blocks": [{"index": b.index, "ok": b.ok, "errors": b.errors} for b in self.blocks],
        }

    def lines(self) -> list[str]:
        return self.errors + [f"block {b.index}: {e}" for b in self.blocks for e in b.errors]


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
        ir = BlockIR.load(bdir)
        trace, loss = BlockTrace.load(bdir / layout.TRACES), LossTrace.load(bdir / layout.LOSSES)
        _check_metrics(cert, ir, trace, loss, rep)
        recorded = read_json(bdir / layout.METRICS, "metrics file").get("metrics")
        if recorded != cert.metrics.model_dump(mode="json"):
            rep.errors.append(f"{cert.metrics_file}: metrics differ from the certificate's")
    except BlockCertError as e:
        rep.errors.append(str(e))
    return rep


def _check_with_model(run_dir: Path, summary: RunSummary, report: RunReport, model: str) -> None:
    """Re-run the native model: traces and per-token losses must match the recorded ones."""
    from .extract import _record
    from .loading import load_model
    from .native import NativeModel, batch_from_token_ids

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
    irs = {i: BlockIR.load(layout.block_dir(run_dir, i)) for i in indices}
    fresh_traces, fresh_losses = _record(NativeModel(lm), batch, indices, irs, 8)
    for i in indices:
        rep, bdir = by_index[i], layout.block_dir(run_dir, i)
        cert = load_model_file(bdir / layout.CERTIFICATE, BlockCertificate, "certificate")
        trace, loss = BlockTrace.load(bdir / layout.TRACES), LossTrace.load(bdir / layout.LOSSES)
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


def verify_run(run_dir: Path, model: str | None = None) -> RunReport:
    report = RunReport()
    if not run_dir.is_dir():
        raise BlockCertError(f"run directory {run_dir} does not exist")
    try:
        summary = load_model_file(run_dir / layout.SUMMARY, RunSummary, "run summary")
    except BlockCertError as e:
        report.errors.append(f"{e} (an incomplete run: rerun `blockcert extract`)")
        return report
    listed = {e.index for e in summary.blocks}
    for d in sorted(run_dir.glob("block_*")):
        if d.is_dir() and d.name[6:].isdigit() and int(d.name[6:]) not in listed:
            report.errors.append(f"{d.name} is not listed in summary.json (left from another run?)")
    for entry in summary.blocks:
        try:
            cert_path = resolve_inside(run_dir, entry.certificate)
        except BlockCertError as e:
            report.blocks.append(BlockReport(entry.index, [str(e)]))
            continue
        rep = verify_block(run_dir, cert_path, entry.index, entry.digest)
        if rep.ok:
            cert = load_model_file(cert_path, BlockCertificate, "certificate")
            if (entry.certified, entry.cov_act, entry.cov_loss, entry.epsilon) != (
                cert.certified, cert.metrics.cov_act, cert.metrics.cov_loss, cert.metrics.epsilon
            ):
                rep.errors.append("summary.json entry disagrees with the certificate")
        report.blocks.append(rep)
    if summary.all_certified != all(e.certified for e in summary.blocks):
        report.errors.append("summary.json: all_certified disagrees with the block verdicts")
    if model is not None:
        with torch.no_grad():
            _check_with_model(run_dir, summary, report, model)
    from .fullverify import verify_full_model  # the full-model certificate, when the run has one

    report.errors.extend(verify_full_model(run_dir, model))
    from .formal import formal_problems  # the composition theorem's hypotheses, checked exactly (Lean's `check`)

    report.errors.extend(formal_problems(run_dir))
    return report
