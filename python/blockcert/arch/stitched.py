"""TODO-DOC"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from blockcert.arch.native import NativeModel, next_token_nll
from blockcert.core.batch import Batch
from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR
from blockcert.core.metrics import exact_sum, row_norms
from blockcert.core.tolerances import LOSS_ATOL, REPLAY_RTOL
from blockcert.present.progress import track
from blockcert.records.fullmodel import FullModelTolerances, LayerDeviation, PromptEvaluation, TokenRef, finite_or_none


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
        with native.materialized(i):  # a streaming model reads layer i once for every chunk
            _advance(native, i, ir, starts, state, errors, abs_sums, base_norm_max)
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


def _advance(native: NativeModel, i: int, ir, starts, state, errors, abs_sums, base_norm_max) -> None:
    """Layer i for every chunk: the baseline and the stitched stream, and their per-token deviation."""
    for lo, s in zip(starts, state, strict=True):
        b, ctx, xb, xs, valid, pos = s
        xb = native.block(i, xb, ctx)
        xs = run_block(ir, xs, valid, pos) if ir is not None else native.block(i, xs, ctx)
        s[2], s[3] = xb, xs
        d = xs.to(torch.float64) - xb.to(torch.float64)
        errors[i, lo : lo + b.ids.shape[0]] = torch.where(valid.cpu(), row_norms(d), 0.0)
        abs_sums[i] += exact_sum(d.abs()[valid])  # per-layer sums stay independent of the machine
        norms = row_norms(xb)[valid.cpu()]
        if norms.numel():
            base_norm_max[i] = max(float(base_norm_max[i]), float(norms.max()))


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
                mae=exact_sum(e) / e.numel() if finite else None,
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
