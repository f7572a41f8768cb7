"""The paper's sensitivity studies (§6.7): prompt shift, threshold sensitivity (Table 4), prompt-set size (Table 5).

Threshold and prompt-size tables are re-derived from the run's certified artifacts (surrogate, traces,
recorded losses, each checked against its certificate's SHA-256) by replaying the surrogate: no model
is needed and nothing is taken from metrics.json on trust. The prompt shift re-traces the native model
on another prompt set and measures the unchanged surrogates there.
Each study is a frozen report written as JSON and rendered as a Markdown table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from blockcert.arch.loading import load_run_model
from blockcert.arch.native import NativeModel, encode
from blockcert.arch.tracing import record_traces
from blockcert.core.metrics import (
    BlockMetrics,
    Policy,
    PromptMetrics,
    Thresholds,
    block_metrics,
    per_prompt_metrics,
    verdict,
)
from blockcert.core.replay import replay
from blockcert.core.schema import Frozen
from blockcert.errors import BlockCertError
from blockcert.present.markdown import markdown_table
from blockcert.present.progress import say, track
from blockcert.records.certificate import BlockCertificate, ModelInfo, PromptInfo
from blockcert.store.files import atomic_write_json
from blockcert.store.manifest import record_if_run
from blockcert.store.prompts import load_prompts, prompt_info
from blockcert.store.run_reader import (
    block_certificate,
    load_certified_ir,
    load_certified_traces,
    load_run_summary,
    select_blocks,
)

DEFAULT_LEVELS = (0.90, 0.94, 0.97)
DEFAULT_MIN_COV_LOSS = 0.90
DEFAULT_KS = (1, 4, 10)


# ---------------------------------------------------------------- schemas


class ShiftBlock(Frozen):
    index: int
    certificate_digest: str
    before: BlockMetrics  # as certified, on the run's prompts
    after: BlockMetrics  # the same surrogate re-measured on the shifted prompts
    certified_before: bool
    certified_after: bool  # the run's policy applied to `after`
    reasons_after: tuple[str, ...]


class ShiftReport(Frozen):
    schema_version: Literal["blockcert.prompt-shift/1"] = "blockcert.prompt-shift/1"
    model: ModelInfo
    certified_prompts: PromptInfo
    shifted_prompts: PromptInfo
    thresholds: Thresholds
    policy: Policy
    blocks: tuple[ShiftBlock, ...]


class ThresholdRow(Frozen):
    index: int
    certificate_digest: str
    n_prompts: int
    passing: tuple[int, ...]  # per level: prompts with cov_act ≥ level and cov_loss ≥ min_cov_loss
    cov_act: tuple[float, ...]  # per prompt
    cov_loss: tuple[float, ...]  # per prompt


class ThresholdReport(Frozen):
    schema_version: Literal["blockcert.threshold-sensitivity/1"] = "blockcert.threshold-sensitivity/1"
    model: ModelInfo
    prompts: PromptInfo
    thresholds: Thresholds  # τ_act, τ_loss the per-prompt coverages were measured with
    levels: tuple[float, ...]
    min_cov_loss: float
    rows: tuple[ThresholdRow, ...]


class PromptSizeRow(Frozen):
    index: int
    certificate_digest: str
    min_cov_act: tuple[float, ...]  # per k: min over the first k prompts of cov_act
    cov_act: tuple[float, ...]  # per prompt


class PromptSizeReport(Frozen):
    schema_version: Literal["blockcert.prompt-size/1"] = "blockcert.prompt-size/1"
    model: ModelInfo
    prompts: PromptInfo
    thresholds: Thresholds
    ks: tuple[int, ...]
    rows: tuple[PromptSizeRow, ...]


# ---------------------------------------------------------------- pure tables


def passing_counts(
    per_prompt: Sequence[PromptMetrics], levels: Sequence[float], min_cov_loss: float
) -> tuple[int, ...]:
    return tuple(sum(p.cov_act >= a and p.cov_loss >= min_cov_loss for p in per_prompt) for a in levels)


def min_coverage_prefixes(cov_act: Sequence[float], ks: Sequence[int]) -> tuple[float, ...]:
    return tuple(min(cov_act[:k]) for k in ks)


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def shift_markdown(r: ShiftReport) -> str:
    header = ["block", "mean error", "ε (max)", "cov_act", "cov_path", "cov_loss", "certified"]
    rows = [
        [
            str(b.index),
            f"{_g(b.before.mae)} → {_g(b.after.mae)}",
            f"{_g(b.before.epsilon)} → {_g(b.after.epsilon)}",
            f"{b.before.cov_act:.3f} → {b.after.cov_act:.3f}",
            f"{b.before.cov_path:.3f} → {b.after.cov_path:.3f}",
            f"{b.before.cov_loss:.3f} → {b.after.cov_loss:.3f}",
            f"{'yes' if b.certified_before else 'no'} → {'yes' if b.certified_after else 'no'}",
        ]
        for b in r.blocks
    ]
    title = (
        f"Prompt shift: certified on '{r.certified_prompts.name}' ({r.certified_prompts.n_prompts} prompts), "
        f"re-measured on '{r.shifted_prompts.name}' ({r.shifted_prompts.n_prompts} prompts); before → after"
    )
    return title + "\n\n" + markdown_table(header, rows)


def threshold_markdown(r: ThresholdReport) -> str:
    header = ["block"] + [f"cov_act ≥ {a:g}" for a in r.levels]
    rows = [[str(w.index)] + [f"{c}/{w.n_prompts}" for c in w.passing] for w in r.rows]
    title = (
        f"Threshold sensitivity on '{r.prompts.name}': prompts whose activation coverage reaches each level "
        f"with cov_loss ≥ {r.min_cov_loss:g} (τ_act={r.thresholds.tau_act:g}, τ_loss={r.thresholds.tau_loss:g})"
    )
    return title + "\n\n" + markdown_table(header, rows)


def prompt_size_markdown(r: PromptSizeReport) -> str:
    header = ["block"] + [f"k = {k}" for k in r.ks]
    rows = [[str(w.index)] + [f"{v:.3f}" for v in w.min_cov_act] for w in r.rows]
    title = f"Prompt-set size sensitivity on '{r.prompts.name}': minimum activation coverage over the first k prompts"
    return title + "\n\n" + markdown_table(header, rows)


# ---------------------------------------------------------------- option parsing


def parse_levels(spec: str) -> tuple[float, ...]:
    try:
        levels = tuple(float(v) for v in spec.split(",") if v.strip())
    except ValueError:
        raise BlockCertError(f"--levels {spec!r}: expected coverage levels like 0.90,0.94,0.97") from None
    if not levels or any(not 0 <= a <= 1 for a in levels):
        raise BlockCertError(f"--levels {spec!r}: expected one or more coverage levels in [0, 1]")
    return levels


def parse_ks(spec: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(v) for v in spec.split(",") if v.strip())
    except ValueError:
        raise BlockCertError(f"--k {spec!r}: expected prompt counts like 1,4,10") from None
    if not ks or any(k < 1 for k in ks):
        raise BlockCertError(f"--k {spec!r}: expected one or more prompt counts ≥ 1")
    return ks


# ---------------------------------------------------------------- studies


def _per_prompt(run_dir: Path, cert: BlockCertificate) -> list[PromptMetrics]:
    ir = load_certified_ir(run_dir, cert)
    trace, loss = load_certified_traces(run_dir, cert)
    r = replay(ir, trace)
    return per_prompt_metrics(
        r.errors, r.out_norms, trace.valid, r.path_ok, loss.base_nll, loss.stitched_nll, loss.loss_ok, cert.thresholds
    )


def _certified_per_prompt(run_dir: Path, blocks: str | None):
    summary = load_run_summary(run_dir)
    out = []
    for i in track(select_blocks(summary, blocks), "replaying surrogates"):
        cert = block_certificate(run_dir, summary, i)
        out.append((cert, _per_prompt(run_dir, cert)))
    return summary, out


def threshold_sensitivity(
    run_dir: Path,
    levels: Sequence[float] = DEFAULT_LEVELS,
    min_cov_loss: float = DEFAULT_MIN_COV_LOSS,
    blocks: str | None = None,
) -> ThresholdReport:
    if not 0 <= min_cov_loss <= 1:
        raise BlockCertError(f"--min-cov-loss {min_cov_loss:g} must lie in [0, 1]")
    summary, per_block = _certified_per_prompt(run_dir, blocks)
    rows = tuple(
        ThresholdRow(
            index=c.block_index,
            certificate_digest=c.digest,
            n_prompts=len(pp),
            passing=passing_counts(pp, levels, min_cov_loss),
            cov_act=tuple(p.cov_act for p in pp),
            cov_loss=tuple(p.cov_loss for p in pp),
        )
        for c, pp in per_block
    )
    return ThresholdReport(
        model=summary.model,
        prompts=summary.prompts,
        thresholds=summary.thresholds,
        levels=tuple(levels),
        min_cov_loss=min_cov_loss,
        rows=rows,
    )


def prompt_size_sensitivity(
    run_dir: Path, ks: Sequence[int] | None = None, blocks: str | None = None
) -> PromptSizeReport:
    """`ks` None: the paper's 1, 4, 10, leaving out those beyond the run's prompt count."""
    summary = load_run_summary(run_dir)
    n = summary.prompts.n_prompts
    if ks is None:
        ks = tuple(k for k in DEFAULT_KS if k <= n) or (n,)
        if ks != DEFAULT_KS:
            say(f"note: the run has {n} prompts; reporting k = {', '.join(map(str, ks))}")
    elif max(ks) > n:
        raise BlockCertError(f"--k {max(ks)} exceeds the run's {n} prompts; choose k ≤ {n}")
    _, per_block = _certified_per_prompt(run_dir, blocks)
    rows = tuple(
        PromptSizeRow(
            index=c.block_index,
            certificate_digest=c.digest,
            min_cov_act=min_coverage_prefixes([p.cov_act for p in pp], ks),
            cov_act=tuple(p.cov_act for p in pp),
        )
        for c, pp in per_block
    )
    return PromptSizeReport(
        model=summary.model, prompts=summary.prompts, thresholds=summary.thresholds, ks=tuple(ks), rows=rows
    )


def prompt_shift(
    run_dir: Path,
    prompts: str,
    model: str | None = None,
    device: str | None = None,
    blocks: str | None = None,
    batch_size: int = 8,
) -> ShiftReport:

    if batch_size < 1:
        raise BlockCertError("--batch-size must be at least 1")
    summary = load_run_summary(run_dir)
    indices = select_blocks(summary, blocks)
    ps = load_prompts(prompts)
    if ps.sha256 == summary.prompts.sha256:
        raise BlockCertError(
            f"prompt set {prompts!r} is the one the run was certified on; a shift needs another "
            "(to re-check the certified prompts use `blockcert verify --model`)"
        )
    certs = {i: block_certificate(run_dir, summary, i) for i in indices}
    say(f"loading {model or summary.model.name} ({summary.model.dtype})")
    lm = load_run_model(summary, model, device)
    native = NativeModel(lm)
    batch = encode(lm, ps.prompts)
    # Like extract, all requested surrogates are held at once: the stitched losses of every block come
    # from the same native pass.
    irs = {i: load_certified_ir(run_dir, certs[i], native.device) for i in indices}
    traces, losses = record_traces(native, batch, indices, irs, batch_size)
    out = []
    for i in indices:
        c, t, lo = certs[i], traces[i], losses[i]
        r = replay(irs[i], t, device=native.device)
        m = block_metrics(
            r.errors, r.out_norms, t.valid, r.path_ok, lo.base_nll, lo.stitched_nll, lo.loss_ok, c.thresholds
        )
        ok, reasons = verdict(m, c.policy)
        out.append(
            ShiftBlock(
                index=i,
                certificate_digest=c.digest,
                before=c.metrics,
                after=m,
                certified_before=c.certified,
                certified_after=ok,
                reasons_after=tuple(reasons),
            )
        )
    return ShiftReport(
        model=summary.model,
        certified_prompts=summary.prompts,
        shifted_prompts=prompt_info(ps, batch),
        thresholds=summary.thresholds,
        policy=summary.policy,
        blocks=tuple(out),
    )


def default_shift_name(prompts: str) -> str:
    return "shift_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(prompts).stem) or "prompts") + ".json"


def write_report(path: Path, report: BaseModel) -> None:
    atomic_write_json(path, report.model_dump(mode="json"))
    record_if_run(path)  # a report inside a run directory is listed in its manifest
