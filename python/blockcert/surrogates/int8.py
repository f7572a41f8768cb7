"""`int8`: symmetric per-output-channel int8 weights plus float scales, dequantised by the interpreter.

For each linear map W [out, in] (attention and MLP), scale_o = max_i |W[o, i]| / 127, stored in the IR's
dtype, and q8[o, i] = round(W[o, i] / scale_o) ∈ [−127, 127], computed in float64 against the stored
scale, stored as int8. The interpreter applies q8·scale (core/interpreter.dequantise). Norm weights, biases
and rotary tables stay in the model dtype: they are a few hundred numbers per block.
"""

from __future__ import annotations

import torch

from blockcert.core.ir import BlockIR, Derivation, LinearForm
from blockcert.errors import BlockCertError
from blockcert.surrogates.linear import ATTENTION, MLP, linear_names, without
from blockcert.surrogates.registry import SurrogateKind, register


def quantise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q8 int8 [out, in], scale [out] in w's dtype)."""
    w64 = w.to(torch.float64)
    scale = (w64.abs().amax(dim=1) / 127.0).to(w.dtype)
    s64 = scale.to(torch.float64)[:, None]
    q = torch.where(s64 > 0, torch.round(w64 / torch.where(s64 > 0, s64, 1.0)), 0.0)
    return q.clamp(-127, 127).to(torch.int8).contiguous(), scale.contiguous()


def check(ir: BlockIR, _args: str) -> None:
    names = linear_names(ir, ATTENTION + MLP)
    missing = [n for n in names if f"{n}.weight" not in ir.tensors]
    if missing:
        raise BlockCertError(f"--surrogate int8: {', '.join(missing)} is not stored dense; int8 is derived "
                             "from a dense IR (exact, bf16, fp16, or a pruned one)")


def derive(ir: BlockIR, args: str) -> BlockIR:
    check(ir, args)
    ts = dict(ir.tensors)
    names = linear_names(ir, ATTENTION + MLP)
    for name in names:
        q, s = quantise(ts[f"{name}.weight"])
        ts = without(ts, name)
        ts[f"{name}.q8"], ts[f"{name}.scale"] = q, s
    method = ("symmetric per-output-channel int8 of " + ", ".join(names)
              + ": scale = max|W_row| / 127 (model dtype), q8 = round(W / scale) in float64")
    forms = {**ir.spec.linears, **{n: LinearForm(form="int8") for n in names}}
    spec = ir.spec.model_copy(update={"derivation": Derivation(kind="int8", args=args, method=method),
                                      "linears": forms})
    return BlockIR(spec, ts)


register(SurrogateKind("int8", "per-output-channel symmetric int8 weights + float scales", derive, check=check))
