"""`blockcert stitch`: replay the native and the stitched model side by side; write the full-model certificate.

Both residual streams advance together, layer-major over every chunk of prompts: for each layer the
native block moves the baseline stream, and either the native block or the layer's surrogate moves the
stitched stream. A surrogate is loaded (and checked against its certificate) only when its layer comes
up and dropped right after, so at most one block's surrogate lives beside the model's own weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import layout
from .certificate import BlockCertificate, load_model_file, write_model_file
from .errors import BlockCertError
from .extract import LOSS_ATOL, REPLAY_RTOL
from .files import atomic_write_json, resolve_inside, sha256_file
from .fullmodel import (
    CERTIFICATE_FILE,
    EVALUATION_FILE,
    SEMANTIC_FILE,
    BlockRef,
    FullModelCertificate,
    FullModelEvaluation,
    FullModelPolicy,
    FullModelTolerances,
    LayerDeviation,
    PromptEvaluation,
    TokenRef,
    finite_or_none,
    full_verdict,
    global_metrics,
)
from .interpreter import run_block
from .ir import BlockIR
from .native import Batch, NativeModel, next_token_nll
from .progress import say, track
from .runinputs import (
    block_certificate,
    certified_batch,
    load_certified_ir,
    load_run,
    load_run_model,
    require_certified_prompts,
    select_blocks,
)
from .summary import RunSummary


@dataclass(frozen=True)
class PairedReplay:
    """Baseline vs stitched, per layer and per token. Tensors live on the CPU."""

    valid: torch.Tensor  # [P, T] bool
    errors: torch.Tensor  # [L, P, T] float64: ||x̂ − x||₂ after each block (0 at padding)
    abs_sums: torch.Tensor  # [L] float64: Σ over valid tokens and features of |x̂ − x|
    base_norm_max: torch.Tensor  # [L] float64: max over valid tokens of ||x||₂
    base_nll: torch.Tensor  # [P, T-1] float64
    stitched_nll: torch.Tensor  # [P, T-1] float64
    loss_ok: torch.Tensor  # [P, T-1] bool
    base_next: torch.Tensor  # [P, T] int64: greedy next token after each prefix
    stitched_next: torch.Tensor  # [P, T] int64
    base_margin: torch.Tensor  # [P, T] float64: top-1 minus top-2 logit, to judge near-ties
    stitched_margin: torch.Tensor  # [P, T] float64


def _greedy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top = logits.topk(2, dim=-1) if logits.shape[-1] > 1 else logits.topk(1, dim=-1)
    vals = top.values.to(torch.float64)
    margin = vals[..., 0] - vals[..., 1] if vals.shape[-1] > 1 else torch.full_like(vals[..., 0], torch.inf)
    return top.indices[..., 0].cpu(), margin.cpu()


@torch.no_grad()
def paired_replay(
    native: NativeModel,
    batch: Batch,
    stitched: set[int],
    load_ir: Callable[[int], BlockIR],
    batch_size: int,
    label: str = "stitched replay",
) -> PairedReplay:
    n_layers = len(native.layers)
    p, t = batch.ids.shape
    dev = native.device
    chunks = [batch.rows(lo, min(lo + batch_size, p)) for lo in range(0, p, batch_size)]
    starts = list(range(0, p, batch_size))
    state = []
    for b in chunks:
        x, ctx = native.embed(b)
        state.append([b, ctx, x, x, b.valid.to(dev), b.positions.to(dev)])
    errors = torch.zeros(n_layers, p, t, dtype=torch.float64)
    abs_sums = torch.zeros(n_layers, dtype=torch.float64)
    base_norm_max = torch.zeros(n_layers, dtype=torch.float64)
    for i in track(range(n_layers), label, total=n_layers):
        ir = load_ir(i) if i in stitched else None
        for lo, s in zip(starts, state, strict=True):
            b, ctx, xb, xs, valid, pos = s
            xb = native.block(i, xb, ctx)
            xs = run_block(ir, xs, valid, pos) if ir is not None else native.block(i, xs, ctx)
            s[2], s[3] = xb, xs
            d = xs.to(torch.float64) - xb.to(torch.float64)
            errors[i, lo : lo + b.ids.shape[0]] = torch.where(valid, d.norm(dim=-1), 0.0).cpu()
            abs_sums[i] += float(d.abs().sum(dim=-1)[valid].sum())
            norms = xb.to(torch.float64).norm(dim=-1)[valid]
            if norms.numel():
                base_norm_max[i] = max(float(base_norm_max[i]), float(norms.max()))
        del ir  # streaming: the next surrogate is loaded only when its layer comes up
    cols: list[list[torch.Tensor]] = [[] for _ in range(7)]
    for b, _ctx, xb, xs, _v, _p in state:
        # One prompt at a time: [T, vocab] logits and their float64 log-softmax are the largest
        # tensors of the replay; per prompt they stay O(T × vocab) whatever the batch size.
        for r in range(b.ids.shape[0]):
            row = b.rows(r, r + 1)
            lb, ls = native.logits(xb[r : r + 1]), native.logits(xs[r : r + 1])
            bn, ok = next_token_nll(lb, row)
            sn, _ = next_token_nll(ls, row)
            (nb, mb), (ns, ms) = _greedy(lb), _greedy(ls)
            for col, v in zip(cols, (bn, sn, ok, nb, ns, mb, ms), strict=True):
                col.append(v)
            del lb, ls
    bn, sn, ok, nb, ns, mb, ms = (torch.cat(c) for c in cols)
    return PairedReplay(batch.valid.clone(), errors, abs_sums, base_norm_max, bn, sn, ok, nb, ns, mb, ms)


def _floats(x: torch.Tensor) -> tuple[float | None, ...]:
    return tuple(finite_or_none(v) for v in x.tolist())


def layer_deviations(r: PairedReplay, stitched: set[int], hidden_size: int) -> tuple[LayerDeviation, ...]:
    n = int(r.valid.sum())
    out = []
    for i in range(r.errors.shape[0]):
        e = r.errors[i][r.valid]
        finite = n > 0 and bool(torch.isfinite(e).all())
        at = None
        if finite:
            flat = int(torch.argmax(torch.where(r.valid, r.errors[i], -1.0)))
            at = TokenRef(prompt=flat // r.valid.shape[1], position=flat % r.valid.shape[1])
        out.append(
            LayerDeviation(
                layer=i,
                stitched=i in stitched,
                n_tokens=n,
                mae=float(e.mean()) if finite else None,
                mean_abs=finite_or_none(float(r.abs_sums[i]) / (n * hidden_size)) if finite else None,
                max_token_error=float(e.max()) if finite else None,
                max_token_error_at=at,
                baseline_max_norm=finite_or_none(float(r.base_norm_max[i])) if n else None,
            )
        )
    return tuple(out)


def prompt_evaluations(r: PairedReplay) -> tuple[PromptEvaluation, ...]:
    out = []
    for p in range(r.valid.shape[0]):
        n = int(r.valid[p].sum())
        ok = r.loss_ok[p]
        out.append(
            PromptEvaluation(
                prompt=p,
                n_tokens=n,
                baseline_nll=_floats(r.base_nll[p][ok]),
                stitched_nll=_floats(r.stitched_nll[p][ok]),
                baseline_next=tuple(r.base_next[p][r.valid[p]].tolist()),
                stitched_next=tuple(r.stitched_next[p][r.valid[p]].tolist()),
            )
        )
    return tuple(out)


def tolerances_for(dtype: str, layers: tuple[LayerDeviation, ...]) -> FullModelTolerances:
    scale = max([1.0] + [la.baseline_max_norm for la in layers if la.baseline_max_norm is not None])
    return FullModelTolerances(
        residual_atol=REPLAY_RTOL[dtype] * scale, loss_atol=LOSS_ATOL[dtype], logit_atol=LOSS_ATOL[dtype]
    )


def load_full_certificate(run_dir: Path) -> FullModelCertificate:
    """The run's full-model certificate, refused unless it and its evaluation file are intact."""
    path = run_dir / CERTIFICATE_FILE
    if not path.is_file():
        raise BlockCertError(f"{run_dir} holds no {CERTIFICATE_FILE}; run `blockcert stitch` first")
    cert = load_model_file(path, FullModelCertificate, "full-model certificate")
    if cert.body_digest() != cert.digest:
        raise BlockCertError(f"{CERTIFICATE_FILE} does not match its digest (edited?); rerun `blockcert stitch`")
    ev = resolve_inside(run_dir, cert.evaluation_file)
    if not ev.is_file() or sha256_file(ev) != cert.evaluation_sha256:
        raise BlockCertError(f"{cert.evaluation_file} is missing or changed since stitching; rerun `blockcert stitch`")
    return cert


def stitched_block_certificates(
    run_dir: Path, summary: RunSummary, cert: FullModelCertificate
) -> dict[int, BlockCertificate]:
    """The block certificates a full-model certificate stands on, as it recorded them."""
    out = {}
    for ref in cert.block_certificates:
        bc = block_certificate(run_dir, summary, ref.index)
        if bc.digest != ref.digest:
            raise BlockCertError(
                f"block {ref.index}: its certificate changed since stitching; rerun `blockcert stitch`"
            )
        out[ref.index] = bc
    return out


@dataclass(frozen=True)
class StitchOptions:
    run_dir: Path
    blocks: str | None = None  # None: every block the run has a surrogate for
    prompts: str | None = None  # None: the certified prompts; otherwise must be the same set
    model: str | None = None  # None: the model the run records
    device: str | None = None  # None: the run's device
    batch_size: int = 8
    policy: FullModelPolicy = FullModelPolicy()


@dataclass(frozen=True)
class StitchResult:
    evaluation: FullModelEvaluation
    certificate: FullModelCertificate


def run_stitch(opts: StitchOptions) -> StitchResult:
    run_dir = opts.run_dir
    if opts.batch_size < 1:
        raise BlockCertError("--batch-size must be at least 1")
    summary = load_run(run_dir)
    blocks = select_blocks(summary, opts.blocks)
    if opts.prompts is not None:
        require_certified_prompts(summary, opts.prompts)
    certs = {i: block_certificate(run_dir, summary, i) for i in blocks}
    say(f"loading {opts.model or summary.model.name} ({summary.model.dtype})")
    lm = load_run_model(summary, opts.model, opts.device)
    native = NativeModel(lm)
    batch = certified_batch(run_dir, summary, lm)
    replay = paired_replay(
        native, batch, set(blocks), lambda i: load_certified_ir(run_dir, certs[i], native.device), opts.batch_size
    )
    layers = layer_deviations(replay, set(blocks), lm.config.hidden_size)
    per_prompt = prompt_evaluations(replay)
    metrics = global_metrics(layers, per_prompt)
    info = summary.model
    evaluation = FullModelEvaluation(
        model=info,
        prompts=summary.prompts,
        stitched_blocks=tuple(blocks),
        batch_size=opts.batch_size,
        device=native.device.type,
        layers=layers,
        per_prompt=per_prompt,
        metrics=metrics,
    )
    refs = tuple(
        BlockRef(index=i, certificate=f"block_{i:03d}/{layout.CERTIFICATE}", digest=c.digest, certified=c.certified)
        for i, c in certs.items()
    )
    ok, reasons = full_verdict(metrics, opts.policy, refs)
    # Nothing stale may stand beside new numbers looking valid: drop the verdict first, write it last.
    (run_dir / CERTIFICATE_FILE).unlink(missing_ok=True)
    (run_dir / SEMANTIC_FILE).unlink(missing_ok=True)  # it belonged to the previous certificate
    atomic_write_json(run_dir / EVALUATION_FILE, evaluation.model_dump(mode="json"))
    cert = FullModelCertificate(
        model=info,
        prompts=summary.prompts,
        stitched_blocks=tuple(blocks),
        block_certificates=refs,
        evaluation_file=EVALUATION_FILE,
        evaluation_sha256=sha256_file(run_dir / EVALUATION_FILE),
        tolerances=tolerances_for(summary.model.dtype, layers),
        policy=opts.policy,
        metrics=metrics,
        certified=ok,
        reasons=tuple(reasons),
    ).sealed()
    write_model_file(run_dir / CERTIFICATE_FILE, cert)
    return StitchResult(evaluation, cert)
