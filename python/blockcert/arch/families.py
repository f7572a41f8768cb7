"""Llama-like families: each states only its difference from Llama (transformers' modular style).

- Mistral (`MistralDecoderLayer`): Llama numerics plus an optional sliding window.
- Qwen2 / Qwen2.5 (`Qwen2DecoderLayer`): biases on Q, K, V but not O (the IR stores a bias per linear map,
  so that is data, not code); a sliding window on the layers the config's `layer_types` marks.
- Qwen3 (`Qwen3DecoderLayer`): RMSNorm of queries and keys over the head dimension before RoPE.
- Phi-3 (`Phi3DecoderLayer`): fused projections, split exactly on extraction: qkv_proj's rows are
  [q | k | v] and gate_up_proj's rows [gate | up], the order Phi3Attention and Phi3MLP slice their outputs in.
  A row of a fused matmul is the same dot product as that row of its part, so the split replays exactly
  (tests/test_families.py checks it bit for bit).
"""

from __future__ import annotations

from blockcert.arch.base import copy_tensor, register
from blockcert.arch.llama import LlamaAdapter
from blockcert.errors import BlockCertError


def layer_window(config, index: int) -> int | None:
    """Layer `index`'s sliding window, or None for full attention, as the config declares it."""
    window = getattr(config, "sliding_window", None)
    if window is None:
        return None
    types = getattr(config, "layer_types", None)
    if types is not None:
        return int(window) if types[index] == "sliding_attention" else None
    return int(window) if getattr(config, "use_sliding_window", True) else None


class _WindowedLlama(LlamaAdapter):
    """A Llama-like family whose layers may use a sliding window (declared per layer in the IR)."""

    def attention_spec(self, cfg, layer, index, ts):
        spec = super().attention_spec(cfg, layer, index, ts)
        window = layer_window(cfg, index)
        if window is None:
            return spec
        if "window" not in type(spec).model_fields:
            raise BlockCertError(f"layer {index} uses a sliding window of {window}; this IR cannot declare it yet")
        return spec.model_copy(update={"window": window})


@register
class MistralAdapter(_WindowedLlama):
    model_type = family = "mistral"
    architecture = "MistralForCausalLM"
    label = "Mistral (MistralForCausalLM)"


@register
class Qwen2Adapter(_WindowedLlama):
    model_type = family = "qwen2"
    architecture = "Qwen2ForCausalLM"
    label = "Qwen2 / Qwen2.5 (Qwen2ForCausalLM)"


@register
class Phi3Adapter(LlamaAdapter):
    model_type = family = "phi3"
    architecture = "Phi3ForCausalLM"
    label = "Phi-3 (Phi3ForCausalLM)"

    def check_config(self, config, what: str) -> None:
        rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
        if rope != "default" or float(getattr(config, "partial_rotary_factor", 1.0) or 1.0) != 1.0:
            raise BlockCertError(f"{what}: Phi-3 with rope_type {rope!r} or partial rotary is not supported")

    def linear_tensors(self, layer):
        attn, mlp, cfg = layer.self_attn, layer.mlp, layer.self_attn.config
        q = cfg.num_attention_heads * attn.head_dim
        kv = cfg.num_key_value_heads * attn.head_dim
        qkv, gate_up = attn.qkv_proj.weight, mlp.gate_up_proj.weight
        half = gate_up.shape[0] // 2
        return {
            "attn.q.weight": copy_tensor(qkv[:q]),
            "attn.k.weight": copy_tensor(qkv[q : q + kv]),
            "attn.v.weight": copy_tensor(qkv[q + kv :]),
            "attn.o.weight": copy_tensor(attn.o_proj.weight),
            "mlp.gate.weight": copy_tensor(gate_up[:half]),
            "mlp.up.weight": copy_tensor(gate_up[half:]),
            "mlp.down.weight": copy_tensor(mlp.down_proj.weight),
        }


@register
class Qwen3Adapter(_WindowedLlama):
    model_type = family = "qwen3"
    architecture = "Qwen3ForCausalLM"
    label = "Qwen3 (Qwen3ForCausalLM)"

    def norm_tensors(self, layer):
        return {**super().norm_tensors(layer),
                "attn.q_norm.weight": copy_tensor(layer.self_attn.q_norm.weight),
                "attn.k_norm.weight": copy_tensor(layer.self_attn.k_norm.weight)}

    def attention_spec(self, cfg, layer, index, ts):
        return super().attention_spec(cfg, layer, index, ts).model_copy(update={"qk_norm": self.norm_spec(cfg)})
