"""The surrogate IR: a declared op sequence plus plain named tensors.

`ir.json` holds the `BlockSpec` (what to compute, in which order, with which constants); `ir.safetensors`
holds the tensors. Every linear map is stored as `[out, in]` and applied as `x @ W.T + b`, whatever the
source layout (GPT-2's Conv1D weights are transposed on extraction, exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .errors import BlockCertError
from .files import atomic_save_safetensors, atomic_write_json, read_json
from .native import NativeModel
from .records import Frozen

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
    op: Literal["norm", "attention", "mlp", "residual"]
    weights: str | None = None


SurrogateKind = Literal["exact", "bf16", "fp16"]


class BlockSpec(Frozen):
    format: Literal["blockcert.ir/1"] = IR_FORMAT
    family: Literal["llama", "gpt2"]
    block_index: int
    # How the tensors were derived from the native block: an exact copy, or weights rounded to a
    # narrower float format (a quantized surrogate; rotary tables are never rounded).
    surrogate: SurrogateKind = "exact"
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

    def save(self, block_dir: Path) -> list[str]:
        atomic_save_safetensors(block_dir / "ir.safetensors", {k: v.cpu() for k, v in self.tensors.items()})
        atomic_write_json(block_dir / "ir.json", self.spec.model_dump(mode="json"))
        return ["ir.json", "ir.safetensors"]

    @staticmethod
    def load(block_dir: Path, device: str | torch.device = "cpu") -> BlockIR:
        from safetensors.torch import load_file

        spec = BlockSpec.model_validate(read_json(block_dir / "ir.json", "IR spec"))
        path = block_dir / "ir.safetensors"
        if not path.is_file():
            raise BlockCertError(f"IR tensors missing: {path}")
        return BlockIR(spec, load_file(path, device=str(device)))


def _act_name(config) -> str:
    name = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None)
    name = {"swish": "silu", "gelu_python": "gelu"}.get(name, name)
    if name not in MlpSpec.model_fields["activation"].annotation.__args__:
        raise BlockCertError(f"activation {name!r} is not supported by the BlockCert interpreter")
    return name


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().contiguous()


@torch.no_grad()
def extract_ir(native: NativeModel, index: int) -> BlockIR:
    """Exact-copy surrogate of block `index`: the same weights, the same constants, written as data."""
    cfg = native.lm.config
    layer = native.layers[index]
    d = cfg.hidden_size
    if native.lm.family == "llama":
        attn, mlp = layer.self_attn, layer.mlp
        n_h, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        hd = attn.head_dim
        ts = {
            "attn_norm.weight": _t(layer.input_layernorm.weight),
            "mlp_norm.weight": _t(layer.post_attention_layernorm.weight),
            "attn.q.weight": _t(attn.q_proj.weight),
            "attn.k.weight": _t(attn.k_proj.weight),
            "attn.v.weight": _t(attn.v_proj.weight),
            "attn.o.weight": _t(attn.o_proj.weight),
            "mlp.gate.weight": _t(mlp.gate_proj.weight),
            "mlp.up.weight": _t(mlp.up_proj.weight),
            "mlp.down.weight": _t(mlp.down_proj.weight),
        }
        for src, dst in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o")):
            if getattr(attn, src).bias is not None:
                ts[f"attn.{dst}.bias"] = _t(getattr(attn, src).bias)
        for src, dst in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
            if getattr(mlp, src).bias is not None:
                ts[f"mlp.{dst}.bias"] = _t(getattr(mlp, src).bias)
        n_pos = min(ROPE_TABLE_MAX, native.lm.max_positions)
        pos = torch.arange(n_pos, device=native.device)[None]
        probe = torch.zeros(1, 1, d, dtype=native.dtype, device=native.device)
        cos, sin = native.lm.model.model.rotary_emb(probe, pos)
        ts["rope.cos"], ts["rope.sin"] = _t(cos[0]), _t(sin[0])
        norm = dict(kind="rms", eps=float(cfg.rms_norm_eps), compute_dtype="float32")
        spec = BlockSpec(
            family="llama",
            block_index=index,
            hidden_size=d,
            attn_norm=NormSpec(**norm),
            mlp_norm=NormSpec(**norm),
            attention=AttentionSpec(
                num_heads=n_h, num_kv_heads=n_kv, head_dim=hd, scaling=float(attn.scaling),
                rope=True, bias="attn.q.bias" in ts, softmax_dtype="float32",
            ),
            mlp=MlpSpec(kind="gated", activation=_act_name(cfg), bias="mlp.up.bias" in ts),
        )
    else:
        attn, mlp = layer.attn, layer.mlp
        n_h = cfg.num_attention_heads
        hd = d // n_h
        w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: [in, 3d], y = x @ W + b
        ts = {
            "attn_norm.weight": _t(layer.ln_1.weight),
            "attn_norm.bias": _t(layer.ln_1.bias),
            "mlp_norm.weight": _t(layer.ln_2.weight),
            "mlp_norm.bias": _t(layer.ln_2.bias),
            "attn.o.weight": _t(attn.c_proj.weight.T),
            "attn.o.bias": _t(attn.c_proj.bias),
            "mlp.up.weight": _t(mlp.c_fc.weight.T),
            "mlp.up.bias": _t(mlp.c_fc.bias),
            "mlp.down.weight": _t(mlp.c_proj.weight.T),
            "mlp.down.bias": _t(mlp.c_proj.bias),
        }
        for j, name in enumerate("qkv"):
            ts[f"attn.{name}.weight"] = _t(w[:, j * d : (j + 1) * d].T)
            ts[f"attn.{name}.bias"] = _t(b[j * d : (j + 1) * d])
        eps = float(cfg.layer_norm_epsilon)
        spec = BlockSpec(
            family="gpt2",
            block_index=index,
            hidden_size=d,
            attn_norm=NormSpec(kind="layer", eps=eps),
            mlp_norm=NormSpec(kind="layer", eps=eps),
            attention=AttentionSpec(
                num_heads=n_h, num_kv_heads=n_h, head_dim=hd, scaling=float(attn.scaling),
                rope=False, bias=True,
            ),
            mlp=MlpSpec(kind="plain", activation=_act_name(cfg), bias=True),
        )
    return BlockIR(spec, ts)


_ROUND_TO = {"bf16": torch.bfloat16, "fp16": torch.float16}


def simplify(ir: BlockIR, kind: SurrogateKind) -> BlockIR:
    """Derive a surrogate of `kind` from an exact-copy IR (identity for "exact")."""
    if kind == "exact":
        return ir
    narrow = _ROUND_TO[kind]
    tensors = {
        k: v if k.startswith("rope.") else v.to(narrow).to(v.dtype) for k, v in ir.tensors.items()
    }
    return BlockIR(ir.spec.model_copy(update={"surrogate": kind}), tensors)
