"""Small randomly initialised GPT-2 and Llama-family models, built locally (no download).

Used by the tests, the self-contained example run in artifacts/, and the benchmark. Each variant
exercises one architectural feature the interpreter must reproduce (GQA, MQA, llama3 RoPE scaling,
biases, tied embeddings, an explicit head_dim, other activations).
"""

from __future__ import annotations

from pathlib import Path

import torch

_LLAMA_BASE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=512, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
)
# Families that share Llama's config fields: (config class, model class) in transformers.
_LLAMA_LIKE = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
}
_GPT2_BASE = dict(n_embd=64, n_layer=3, n_head=4, n_positions=512, activation_function="gelu_new")

VARIANTS: dict[str, tuple[str, dict]] = {
    "llama-gqa": ("llama", {}),
    "llama-mha": ("llama", {"num_key_value_heads": 4}),
    "llama-mqa-bias": ("llama", {"num_key_value_heads": 1, "attention_bias": True, "mlp_bias": True}),
    "llama-headdim": ("llama", {"head_dim": 32, "num_key_value_heads": 2}),
    "llama3-rope": (
        "llama",
        {
            "tie_word_embeddings": True,
            "rope_parameters": {
                "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
            },
        },
    ),
    "mistral": ("mistral", {"sliding_window": None}),
    "qwen2-bias": ("qwen2", {"use_sliding_window": False}),
    "phi3-fused": ("phi3", {"pad_token_id": None}),
    "qwen3-qknorm": ("qwen3", {"head_dim": 32, "use_sliding_window": False}),
    # A window of 4 tokens, shorter than every prompt, so it really masks; local, local, global layers.
    "gemma3-window": ("gemma3_text", {
        "head_dim": 32, "num_key_value_heads": 1, "sliding_window": 4, "query_pre_attn_scalar": 32,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
        "hidden_activation": "gelu_pytorch_tanh", "hidden_act": None,
    }),
    "gpt2": ("gpt2", {}),
    "gpt2-relu-scaled": ("gpt2", {"activation_function": "relu", "scale_attn_by_inverse_layer_idx": True}),
}


def byte_tokenizer():
    """A byte-level tokenizer: 256 byte tokens plus <s>, </s>, <pad>. Covers any UTF-8 text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_toy_model(variant: str, out_dir: Path, seed: int = 0, init_std: float = 0.1) -> Path:
    """Write a random model of `variant` (see VARIANTS) with its tokenizer to `out_dir`."""
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    family, overrides = VARIANTS[variant]
    tok = byte_tokenizer()
    vocab = len(tok)
    if family in _LLAMA_LIKE:
        config_cls, cls = (getattr(transformers, n) for n in _LLAMA_LIKE[family])
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        cfg = config_cls(**{**_LLAMA_BASE, **ids, **overrides}, vocab_size=vocab, initializer_range=init_std)
    else:
        cfg = GPT2Config(
            **{**_GPT2_BASE, **overrides}, vocab_size=vocab, initializer_range=init_std,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        )
        cls = GPT2LMHeadModel
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    # Random norm gains and biases too, so no parameter is a trivial constant.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or ".ln_" in name:
                p.add_(torch.randn_like(p) * init_std)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
