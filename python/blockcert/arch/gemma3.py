"""Gemma 3 (`Gemma3DecoderLayer`, the text model): what differs from Llama, declared in the IR.

- RMSNorm with the (1 + w) weight, multiplied in float32 before the cast (`NormSpec.unit_offset`);
- four norms per block in the sandwich order: input → attention → post-attention norm → residual add,
  pre-feedforward norm → MLP → post-feedforward norm → residual add (the op sequence says so);
- q/k RMSNorm over the head dimension before RoPE; head_dim independent of hidden / heads;
  scaling query_pre_attn_scalar^-1/2;
- local layers attend through a sliding window, global ones fully, each with its own rotary base: the layer
  types come from the config, and the model hands each layer its own mask and tables (arch/native.py records
  them per layer); the window is part of the IR's declared mask, so path coverage compares it;
- gated GELU-tanh MLP.
"""

from __future__ import annotations

import torch

from blockcert.arch.base import copy_tensor, register
from blockcert.arch.families import layer_window
from blockcert.arch.llama import LlamaAdapter
from blockcert.core.ir import BlockIR, BlockSpec, MlpSpec, NormSpec, Op
from blockcert.errors import BlockCertError

SANDWICH = (
    Op(op="norm", weights="attn_norm"),
    Op(op="attention", weights="attn"),
    Op(op="norm", weights="post_attn_norm"),
    Op(op="residual"),
    Op(op="norm", weights="mlp_norm"),
    Op(op="mlp", weights="mlp"),
    Op(op="norm", weights="post_mlp_norm"),
    Op(op="residual"),
)


@register
class Gemma3Adapter(LlamaAdapter):
    model_type = family = "gemma3_text"
    architecture = "Gemma3ForCausalLM"
    label = "Gemma 3 (Gemma3ForCausalLM, text)"

    def check_config(self, config, what: str) -> None:
        if getattr(config, "attn_logit_softcapping", None) is not None:
            raise BlockCertError(f"{what}: Gemma attention logit soft-capping is not supported")
        if getattr(config, "use_bidirectional_attention", False):
            raise BlockCertError(f"{what}: bidirectional Gemma attention is not supported")

    def norm_spec(self, config) -> NormSpec:
        return NormSpec(kind="rms", eps=float(config.rms_norm_eps), compute_dtype="float32", unit_offset=True)

    def norm_tensors(self, layer):
        return {
            "attn_norm.weight": copy_tensor(layer.input_layernorm.weight),
            "post_attn_norm.weight": copy_tensor(layer.post_attention_layernorm.weight),
            "mlp_norm.weight": copy_tensor(layer.pre_feedforward_layernorm.weight),
            "post_mlp_norm.weight": copy_tensor(layer.post_feedforward_layernorm.weight),
            "attn.q_norm.weight": copy_tensor(layer.self_attn.q_norm.weight),
            "attn.k_norm.weight": copy_tensor(layer.self_attn.k_norm.weight),
        }

    def rotary(self, native, layer, probe, pos):
        # Local and global layers have their own rotary bases: the layer's type picks the table.
        layer_type = native.lm.config.layer_types[layer.self_attn.layer_idx]
        return native.lm.model.model.rotary_emb(probe, pos, layer_type)

    def attention_spec(self, cfg, layer, index, ts):
        return super().attention_spec(cfg, layer, index, ts).model_copy(
            update={"qk_norm": self.norm_spec(cfg), "window": layer_window(cfg, index)}
        )

    @torch.no_grad()
    def extract_ir(self, native, index: int) -> BlockIR:
        cfg = native.lm.config
        layer = native.layers[index]
        ts = {**self.norm_tensors(layer), **self.linear_tensors(layer), **self.rope_tables(native, layer)}
        norm = self.norm_spec(cfg)
        act = getattr(cfg, "hidden_activation", None) or "gelu_pytorch_tanh"
        spec = BlockSpec(
            family=self.family, block_index=index, hidden_size=cfg.hidden_size,
            attn_norm=norm, mlp_norm=norm, post_attn_norm=norm, post_mlp_norm=norm,
            attention=self.attention_spec(cfg, layer, index, ts),
            mlp=MlpSpec(kind="gated", activation=act, bias="mlp.up.bias" in ts),
            ops=SANDWICH,
        )
        return BlockIR(spec, ts)
