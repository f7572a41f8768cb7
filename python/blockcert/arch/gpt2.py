"""GPT-2 (`GPT2Block`): LayerNorm, fused Conv1D qkv split exactly, absolute positions added before block 0."""

from __future__ import annotations

import torch

from blockcert.arch.base import ArchAdapter, activation_name, copy_tensor, register
from blockcert.core.ir import AttentionSpec, BlockIR, BlockSpec, MlpSpec, NormSpec
from blockcert.errors import BlockCertError


@register
class GPT2Adapter(ArchAdapter):
    model_type = "gpt2"
    family = "gpt2"
    architecture = "GPT2LMHeadModel"
    label = "GPT-2 (GPT2LMHeadModel)"

    def check_config(self, config, what: str) -> None:
        if getattr(config, "reorder_and_upcast_attn", False) or getattr(config, "add_cross_attention", False):
            raise BlockCertError(
                f"{what}: GPT-2 options reorder_and_upcast_attn / add_cross_attention are not supported"
            )

    def layers(self, model):
        return model.transformer.h

    def final_norm(self, model):
        return model.transformer.ln_f

    def attention(self, layer):
        return layer.attn

    def mask_from_args(self, args, kwargs):
        # GPT2Block's second positional argument is the cache; older call sites pass the mask there.
        m = kwargs.get("attention_mask")
        return args[1] if m is None and len(args) >= 2 else m

    @torch.no_grad()
    def extract_ir(self, native, index: int) -> BlockIR:
        cfg = native.lm.config
        layer = native.layers[index]
        attn, mlp = layer.attn, layer.mlp
        d = cfg.hidden_size
        w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: [in, 3d], y = x @ W + b
        ts = {
            "attn_norm.weight": copy_tensor(layer.ln_1.weight),
            "attn_norm.bias": copy_tensor(layer.ln_1.bias),
            "mlp_norm.weight": copy_tensor(layer.ln_2.weight),
            "mlp_norm.bias": copy_tensor(layer.ln_2.bias),
            "attn.o.weight": copy_tensor(attn.c_proj.weight.T),
            "attn.o.bias": copy_tensor(attn.c_proj.bias),
            "mlp.up.weight": copy_tensor(mlp.c_fc.weight.T),
            "mlp.up.bias": copy_tensor(mlp.c_fc.bias),
            "mlp.down.weight": copy_tensor(mlp.c_proj.weight.T),
            "mlp.down.bias": copy_tensor(mlp.c_proj.bias),
        }
        for j, name in enumerate("qkv"):
            ts[f"attn.{name}.weight"] = copy_tensor(w[:, j * d : (j + 1) * d].T)
            ts[f"attn.{name}.bias"] = copy_tensor(b[j * d : (j + 1) * d])
        norm = NormSpec(kind="layer", eps=float(cfg.layer_norm_epsilon))
        n_h = cfg.num_attention_heads
        spec = BlockSpec(
            family=self.family,
            block_index=index,
            hidden_size=d,
            attn_norm=norm,
            mlp_norm=norm,
            attention=AttentionSpec(
                num_heads=n_h, num_kv_heads=n_h, head_dim=d // n_h, scaling=float(attn.scaling), rope=False, bias=True,
            ),
            mlp=MlpSpec(kind="plain", activation=activation_name(cfg), bias=True),
        )
        return BlockIR(spec, ts)
