"""`prune-heads:K` and `prune-neurons:F`: keep what matters most on the block's certification traces.

Both rankings are measurements on the run's own certification prompts (the traces the certificate is
computed from), recorded in the IR's derivation with every score, so the selection is part of what is
certified, not hidden tuning. The pruned tensors are genuinely smaller (core/ir.py).

Heads: the score of head h is Σ over the certification tokens of ‖B(x) − B₋ₕ(x)‖₂, the change of the
block's output when head h alone is removed. Grouped-query attention: query heads are pruned one by one
and a KV head is kept exactly when a kept query head reads it; a KV group is dropped only when all of its
query heads are (`HeadSelection`).

Neurons: the score of neuron j is Σ over the certification tokens of ‖a_j(x)·W_down[:, j]‖₂ = |a_j(x)|·
‖W_down[:, j]‖₂, the size of its contribution to the block output; the ⌈F·I⌉ largest are kept.

Every score is an exact (order-independent) sum, and ties keep the lower index, so the same traces give
the same selection on any machine.
"""

from __future__ import annotations

import math

import torch

from blockcert.core.interpreter import mlp_activations, run_block
from blockcert.core.ir import BlockIR, Derivation, HeadSelection, NeuronSelection
from blockcert.core.metrics import exact_sum, row_norms
from blockcert.core.replay import CHUNK
from blockcert.core.traces import BlockTrace
from blockcert.errors import BlockCertError
from blockcert.surrogates.linear import MLP, dense_weight, linear_names, take_cols, take_rows
from blockcert.surrogates.registry import Evidence, SurrogateKind, register

HEAD_FORMS = "prune-heads:K with K a whole number, 1 ≤ K ≤ the number of attention heads"
NEURON_FORMS = "prune-neurons:F with F a fraction in (0, 1]"


def _ranked_on(ev: Evidence) -> str:
    return f"certification prompts of this run (token ids SHA-256 {ev.prompts_sha256})"


def _top(scores: list[float], k: int) -> list[int]:
    """Indices of the k largest scores (ties: lower index first), ascending."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    return sorted(order[:k])


def _chunks(trace: BlockTrace):
    for lo in range(0, trace.x_in.shape[0], CHUNK):
        s = slice(lo, lo + CHUNK)
        yield s, trace.x_in[s], trace.valid[s], trace.positions[s]


# ---- heads ----------------------------------------------------------------------------------------

def parse_heads(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise BlockCertError(f"--surrogate 'prune-heads:{text}': K={text!r} is not a whole number; "
                             f"use {HEAD_FORMS}") from None
    return k


def check_heads(ir: BlockIR, text: str) -> None:
    k, a = parse_heads(text), ir.spec.attention
    if a.heads is not None:
        raise BlockCertError(f"--surrogate 'prune-heads:{text}': the IR's heads are already pruned")
    if not 1 <= k <= a.num_heads:
        raise BlockCertError(f"--surrogate 'prune-heads:{text}': K={k} is outside 1..{a.num_heads} "
                             f"(the block has {a.num_heads} heads); use {HEAD_FORMS}")


def keep_heads(ir: BlockIR, kept: list[int]) -> BlockIR:
    """The IR with only native query heads `kept` (ascending) and the KV heads they read."""
    a = ir.spec.attention
    hd, groups = a.head_dim, a.num_heads // a.num_kv_heads
    kept_kv = sorted({h // groups for h in kept})
    q_rows = [h * hd + r for h in kept for r in range(hd)]
    kv_rows = [g * hd + r for g in kept_kv for r in range(hd)]
    ts = take_rows(ir.tensors, "attn.q", q_rows)
    ts = take_rows(take_rows(ts, "attn.k", kv_rows), "attn.v", kv_rows)
    ts = take_cols(ts, "attn.o", q_rows)
    sel = HeadSelection(native_heads=a.num_heads, native_kv_heads=a.num_kv_heads, kept=tuple(kept),
                        kept_kv=tuple(kept_kv), kv_of_head=tuple(kept_kv.index(h // groups) for h in kept))
    att = a.model_copy(update={"num_heads": len(kept), "num_kv_heads": len(kept_kv), "heads": sel})
    return BlockIR(ir.spec.model_copy(update={"attention": att}), ts)


# The last few rankings, keyed by the (IR tensors, trace) objects themselves: a search asks for many K or F
# of the same block, and the scores do not depend on them.
_SCORES: list[tuple[object, object, str, list[float]]] = []


def _cached(ir: BlockIR, trace: BlockTrace, what: str, compute) -> list[float]:
    for t, tr, w, scores in _SCORES:
        if t is ir.tensors and tr is trace and w == what:
            return scores
    scores = compute(ir, trace)
    _SCORES.append((ir.tensors, trace, what, scores))
    del _SCORES[:-8]
    return scores


@torch.no_grad()
def head_scores(ir: BlockIR, trace: BlockTrace) -> list[float]:
    """Per native head: exact Σ over valid tokens of the output change when that head alone is removed."""
    n = ir.spec.attention.num_heads
    full = [run_block(ir, x, valid, pos).to(torch.float64) for _s, x, valid, pos in _chunks(trace)]
    totals = [0.0] * n
    for h in range(n):
        minus = keep_heads(ir, [j for j in range(n) if j != h])
        parts = []
        for y, (_s, x, valid, pos) in zip(full, _chunks(trace), strict=True):
            parts.append(row_norms(y - run_block(minus, x, valid, pos).to(torch.float64))[valid])
        totals[h] = exact_sum(torch.cat(parts))
    return totals


def derive_heads(ir: BlockIR, text: str, ev: Evidence) -> BlockIR:
    check_heads(ir, text)
    k = parse_heads(text)
    scores = _cached(ir, ev.trace, "heads", head_scores)
    kept = _top(scores, k)
    out = keep_heads(ir, kept)
    a = out.spec.attention.heads
    method = (f"kept the {k} of {len(scores)} query heads whose removal changes the block output most "
              f"(Σ‖ΔB‖₂ over the certification tokens): heads {list(a.kept)}; KV heads {list(a.kept_kv)} "
              "kept because a kept query head reads them")
    d = Derivation(kind="prune-heads", args=text, method=method, ranked_on=_ranked_on(ev), scores=tuple(scores))
    return BlockIR(out.spec.model_copy(update={"derivation": d}), out.tensors)


# ---- neurons --------------------------------------------------------------------------------------

def parse_fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise BlockCertError(f"--surrogate 'prune-neurons:{text}': F={text!r} is not a number; "
                             f"use {NEURON_FORMS}") from None
    if not (math.isfinite(f) and 0.0 < f <= 1.0):
        raise BlockCertError(f"--surrogate 'prune-neurons:{text}': F={f:g} is outside (0, 1]; use {NEURON_FORMS}")
    return f


def check_neurons(ir: BlockIR, text: str) -> None:
    parse_fraction(text)
    if ir.spec.mlp.neurons is not None:
        raise BlockCertError(f"--surrogate 'prune-neurons:{text}': the IR's neurons are already pruned")


def n_kept(fraction: float, native: int) -> int:
    return max(1, min(native, math.ceil(fraction * native - 1e-9)))


def keep_neurons(ir: BlockIR, kept: list[int]) -> BlockIR:
    native = dense_weight(ir, "mlp.down", torch.float64).shape[1]
    ts = dict(ir.tensors)
    for name in linear_names(ir, MLP):
        ts = take_cols(ts, name, kept) if name == "mlp.down" else take_rows(ts, name, kept)
    mlp = ir.spec.mlp.model_copy(update={"neurons": NeuronSelection(native=native, kept=tuple(kept))})
    return BlockIR(ir.spec.model_copy(update={"mlp": mlp}), ts)


@torch.no_grad()
def neuron_scores(ir: BlockIR, trace: BlockTrace) -> list[float]:
    col_norms = row_norms(dense_weight(ir, "mlp.down", torch.float64).T).tolist()
    acts = []
    for _s, x, valid, pos in _chunks(trace):
        acts.append(mlp_activations(ir, x, valid, pos)[valid].abs().to(torch.float64).cpu())
    a = torch.cat(acts).numpy()
    return [math.fsum(a[:, j].tolist()) * col_norms[j] for j in range(a.shape[1])]


def derive_neurons(ir: BlockIR, text: str, ev: Evidence) -> BlockIR:
    check_neurons(ir, text)
    f = parse_fraction(text)
    scores = _cached(ir, ev.trace, "neurons", neuron_scores)
    k = n_kept(f, len(scores))
    out = keep_neurons(ir, _top(scores, k))
    method = (f"kept the {k} of {len(scores)} MLP neurons (⌈F·I⌉, F = {f:g}) with the largest contribution "
              "Σ|a_j|·‖W_down[:, j]‖₂ over the certification tokens; the kept indices are in mlp.neurons")
    d = Derivation(kind="prune-neurons", args=text, method=method, ranked_on=_ranked_on(ev), scores=tuple(scores))
    return BlockIR(out.spec.model_copy(update={"derivation": d}), out.tensors)


register(SurrogateKind("prune-heads", HEAD_FORMS + "; ranked on the certification traces", derive_heads,
                       takes_args=True, needs_traces=True, check=check_heads))
register(SurrogateKind("prune-neurons", NEURON_FORMS + "; ranked on the certification traces", derive_neurons,
                       takes_args=True, needs_traces=True, check=check_neurons))
