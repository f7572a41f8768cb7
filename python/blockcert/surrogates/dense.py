"""densify: any surrogate IR in the standard dense form that the bounds (bounds/) read.

Factors are multiplied out in float64 and rounded once to the IR's dtype, int8 is dequantised exactly as
the interpreter does, pruned heads and neurons come back as zero rows / columns at their native indices,
and the head selection is dropped. On real arithmetic the dense IR is the same function as the
surrogate (a removed head's output columns are zero; a removed neuron has zero input rows, and every
supported activation maps 0 to 0, so its zero output column sees 0); in floating point it differs from
the two-product replay by the rounding of the products only. The mask pattern and RoPE flag are kept.
"""

from __future__ import annotations

import torch

from blockcert.core.ir import BlockIR
from blockcert.surrogates.linear import ATTENTION, MLP, dense_weight, linear_names, without


def _dtype(ir: BlockIR) -> torch.dtype:
    return ir.tensors["attn_norm.weight"].dtype


def _scatter_rows(w: torch.Tensor, rows: list[int], n: int) -> torch.Tensor:
    out = torch.zeros((n, *w.shape[1:]), dtype=w.dtype)
    out[torch.tensor(rows, dtype=torch.long)] = w
    return out


def _scatter_cols(w: torch.Tensor, cols: list[int], n: int) -> torch.Tensor:
    out = torch.zeros((w.shape[0], n), dtype=w.dtype)
    out[:, torch.tensor(cols, dtype=torch.long)] = w
    return out


def densify(ir: BlockIR) -> BlockIR:
    dtype = _dtype(ir)
    ts = dict(ir.tensors)
    for name in linear_names(ir, ATTENTION + MLP):
        w = dense_weight(ir, name, dtype)
        ts = without(ts, name)
        ts[f"{name}.weight"] = w
    spec = ir.spec.model_copy(update={"linears": {}})
    heads = spec.attention.heads
    if heads is not None:
        hd = spec.attention.head_dim
        q_rows = [h * hd + r for h in heads.kept for r in range(hd)]
        kv_rows = [g * hd + r for g in heads.kept_kv for r in range(hd)]
        nq, nkv = heads.native_heads * hd, heads.native_kv_heads * hd
        for name, rows, n in (("attn.q", q_rows, nq), ("attn.k", kv_rows, nkv), ("attn.v", kv_rows, nkv)):
            ts[f"{name}.weight"] = _scatter_rows(ts[f"{name}.weight"], rows, n)
            if f"{name}.bias" in ts:
                ts[f"{name}.bias"] = _scatter_rows(ts[f"{name}.bias"], rows, n)
        ts["attn.o.weight"] = _scatter_cols(ts["attn.o.weight"], q_rows, nq)
        att = spec.attention.model_copy(
            update={"num_heads": heads.native_heads, "num_kv_heads": heads.native_kv_heads, "heads": None})
        spec = spec.model_copy(update={"attention": att})
    neurons = spec.mlp.neurons
    if neurons is not None:
        kept = list(neurons.kept)
        for name in linear_names(ir, MLP):
            if name == "mlp.down":
                ts[f"{name}.weight"] = _scatter_cols(ts[f"{name}.weight"], kept, neurons.native)
            else:
                ts[f"{name}.weight"] = _scatter_rows(ts[f"{name}.weight"], kept, neurons.native)
                if f"{name}.bias" in ts:
                    ts[f"{name}.bias"] = _scatter_rows(ts[f"{name}.bias"], kept, neurons.native)
        spec = spec.model_copy(update={"mlp": spec.mlp.model_copy(update={"neurons": None})})
    return BlockIR(spec, ts)
