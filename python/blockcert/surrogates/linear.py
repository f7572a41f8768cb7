"""The linear maps of an IR, by name, and their dense weights whatever form they are stored in (core/ir.py)."""

from __future__ import annotations

import torch

from blockcert.core.interpreter import dequantise
from blockcert.core.ir import BlockIR

ATTENTION = ("attn.q", "attn.k", "attn.v", "attn.o")
MLP = ("mlp.gate", "mlp.up", "mlp.down")
_FORMS = (".weight", ".u", ".v", ".q8", ".scale")


def linear_names(ir: BlockIR, group: tuple[str, ...]) -> list[str]:
    """The maps of `group` the IR stores (a plain MLP has no gate), in the group's order."""
    stored = {k.rsplit(".", 1)[0] for k in ir.tensors if any(k.endswith(f) for f in _FORMS)}
    return [n for n in group if n in stored]


def dense_weight(ir: BlockIR, name: str, dtype: torch.dtype) -> torch.Tensor:
    """The [out, in] matrix map `name` applies: factors multiplied out in float64, int8 dequantised."""
    ts = ir.tensors
    if f"{name}.weight" in ts:
        return ts[f"{name}.weight"].to(dtype)
    if f"{name}.u" in ts:
        return (ts[f"{name}.u"].to(torch.float64) @ ts[f"{name}.v"].to(torch.float64)).to(dtype)
    return dequantise(ts[f"{name}.q8"], ts[f"{name}.scale"], dtype)


def without(ts: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """`ts` without any stored form of map `name` (its bias is kept)."""
    return {k: v for k, v in ts.items() if not any(k == name + f for f in _FORMS)}


def take_rows(ts: dict[str, torch.Tensor], name: str, rows: list[int]) -> dict[str, torch.Tensor]:
    """Keep output rows `rows` of map `name` in whatever form it is stored (its bias and scales too)."""
    idx = torch.tensor(rows, dtype=torch.long)
    out = dict(ts)
    for f in (".weight", ".u", ".q8", ".scale", ".bias"):
        if name + f in ts:
            out[name + f] = ts[name + f].index_select(0, idx).contiguous()
    return out


def take_cols(ts: dict[str, torch.Tensor], name: str, cols: list[int]) -> dict[str, torch.Tensor]:
    """Keep input columns `cols` of map `name` (the bias is per output: unchanged)."""
    idx = torch.tensor(cols, dtype=torch.long)
    out = dict(ts)
    for f in (".weight", ".v", ".q8"):
        if name + f in ts:
            out[name + f] = ts[name + f].index_select(1, idx).contiguous()
    return out
