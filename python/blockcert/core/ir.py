"""The surrogate IR: a declared op sequence plus plain named tensors.

`ir.json` holds the `BlockSpec` (what to compute, in which order, with which constants); `ir.safetensors`
holds the tensors. Every linear map is stored as `[out, in]` and applied as `x @ W.T + b`, whatever the
source layout (GPT-2's Conv1D weights are transposed on extraction, exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from blockcert.core.schema import Frozen

IR_FORMAT = "blockcert.ir/1"
# Rotary tables cover positions [0, ROPE_TABLE_MAX) (or the model's context, if shorter), so a
# surrogate can be replayed on longer prompts than the ones it was extracted with.
ROPE_TABLE_MAX = 2048


class NormSpec(Frozen):
    kind: Literal["rms", "layer"]
    eps: float
    # Llama's RMSNorm upcasts to float32 internally whatever the model dtype; the IR says so.
    compute_dtype: Literal["float32"] | None = None


class AttentionSpec(Frozen):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    pattern: Literal["causal"] = "causal"
    rope: bool
    bias: bool
    softmax_dtype: Literal["float32"] | None = None


class MlpSpec(Frozen):
    kind: Literal["gated", "plain"]
    activation: Literal["silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"]
    bias: bool


class Op(Frozen):
    op: str  # a name in the op registry (core/ops.py)
    weights: str | None = None


class BlockSpec(Frozen):
    format: Literal["blockcert.ir/1"] = IR_FORMAT
    family: str  # the architecture adapter that wrote it (arch/); the interpreter never branches on it
    block_index: int
    # How the tensors were derived from the native block: a kind of the surrogate registry
    # (surrogates/), "exact" for a copy.
    surrogate: str = "exact"
    hidden_size: int
    attn_norm: NormSpec
    attention: AttentionSpec
    mlp_norm: NormSpec
    mlp: MlpSpec
    # residual <- residual + (result of the ops since the last `residual`)
    ops: tuple[Op, ...] = (
        Op(op="norm", weights="attn_norm"),
        Op(op="attention", weights="attn"),
        Op(op="residual"),
        Op(op="norm", weights="mlp_norm"),
        Op(op="mlp", weights="mlp"),
        Op(op="residual"),
    )


@dataclass(frozen=True)
class BlockIR:
    spec: BlockSpec
    tensors: dict[str, torch.Tensor]

    def to(self, device=None, dtype=None) -> BlockIR:
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return BlockIR(self.spec, {k: cast(v) for k, v in self.tensors.items()})
