"""The Llama family (`LlamaDecoderLayer`): RMSNorm and softmax in float32, rotary tables, grouped-query attention."""

from __future__ import annotations

import torch

from blockcert.arch.base import ArchAdapter, activation_name, copy_tensor, register
from blockcert.core.ir import ROPE_TABLE_MAX, AttentionSpec, BlockIR, BlockSpec, MlpSpec, NormSpec
from blockcert.errors import BlockCertError

STATIC_ROPE = ("default", "linear", "llama3")
_PROJ = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o"}
_MLP = {"gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


@register
class LlamaAdapter(ArchAdapter):
    model_type = "llama"
    family = "llama"
    architecture = "LlamaForCausalLM"
    label = "Llama family (LlamaForCausalLM: Llama-2, TinyLlama, Llama-3.x, SmolLM2)"

    def check_config(self, config, what: str) -> None:
        rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
        if rope not in STATIC_ROPE:
            raise BlockCertError(f"{what}: rope_type {rope!r} is not supported (supported: {', '.join(STATIC_ROPE)})")

    def layers(self, model):
        return model.model.layers

    def final_norm(self, model):
        return model.model.norm

    def attention(self, layer):
        return layer.self_attn

    def norm_spec(self, config) -> NormSpec:
        # HF's LlamaRMSNorm upcasts to float32 whatever the model dtype; the IR declares it.
        return NormSpec(kind="rms", eps=float(config.rms_norm_eps), compute_dtype="float32")

    def rotary(self, native, layer, probe: torch.Tensor, pos: torch.Tensor):
        """(cos, sin) of the model's own rotary module at positions `pos` (one table for every layer)."""
        return native.lm.model.model.rotary_emb(probe, pos)

    def rope_tables(self, native, layer) -> dict[str, torch.Tensor]:
        n_pos = min(ROPE_TABLE_MAX, native.lm.max_positions)
        pos = torch.arange(n_pos, device=native.device)[None]
        probe = torch.zeros(1, 1, native.lm.config.hidden_size, dtype=native.dtype, device=native.device)
        cos, sin = self.rotary(native, layer, probe, pos)
        return {"rope.cos": copy_tensor(cos[0]), "rope.sin": copy_tensor(sin[0])}

    def linear_tensors(self, layer) -> dict[str, torch.Tensor]:
        """The seven linear maps (and their biases) under the IR's names, stored [out, in]."""
        ts = {}
        for mod, names, prefix in ((layer.self_attn, _PROJ, "attn"), (layer.mlp, _MLP, "mlp")):
            for src, dst in names.items():
                lin = getattr(mod, src)
                ts[f"{prefix}.{dst}.weight"] = copy_tensor(lin.weight)
                if lin.bias is not None:
                    ts[f"{prefix}.{dst}.bias"] = copy_tensor(lin.bias)
        return ts

    def norm_tensors(self, layer) -> dict[str, torch.Tensor]:
        return {
            "attn_norm.weight": copy_tensor(layer.input_layernorm.weight),
            "mlp_norm.weight": copy_tensor(layer.post_attention_layernorm.weight),
        }

    def attention_spec(self, cfg, layer, index: int, ts: dict) -> AttentionSpec:
        return AttentionSpec(
            num_heads=cfg.num_attention_heads, num_kv_heads=cfg.num_key_value_heads, head_dim=layer.self_attn.head_dim,
            scaling=float(layer.self_attn.scaling), rope=True, bias="attn.q.bias" in ts, softmax_dtype="float32",
        )

    @torch.no_grad()
    def extract_ir(self, native, index: int) -> BlockIR:
        cfg = native.lm.config
        layer = native.layers[index]
        ts = {**self.norm_tensors(layer), **self.linear_tensors(layer), **self.rope_tables(native, layer)}
        norm = self.norm_spec(cfg)
        spec = BlockSpec(
            family=self.family,
            block_index=index,
            hidden_size=cfg.hidden_size,
            attn_norm=norm,
            mlp_norm=norm,
            attention=self.attention_spec(cfg, layer, index, ts),
            mlp=MlpSpec(kind="gated", activation=activation_name(cfg), bias="mlp.up.bias" in ts),
        )
        return BlockIR(spec, ts)
