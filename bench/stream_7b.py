"""Streaming demonstration: certify blocks of a Llama-2-7B-shape model on a 24 GiB machine.

    python bench/stream_7b.py [--out bench/.cache/llama2-7b-shape] [--run bench/.cache/stream_7b_run]
                              [--blocks 0,5,10,15,20]

Writes a random-init model of Llama-2-7B's shape (32 layers, hidden 4096, intermediate 11008, 32 heads,
vocab 32000, untied head) as bfloat16 safetensors shards, one shard per layer, generated block by block
so that the whole model is never in memory; then `blockcert extract` of the blocks on the stress prompts
with `load_model(..., streaming=True)` into a run directory (each block's files written as soon as they
exist, as `blockcert extract --out` does), reporting wall time and peak RSS next to the weights' size.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import blockcert

SHAPE = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5)


def write(out: Path) -> Path:
    if (out / "model.safetensors.index.json").is_file():
        return out
    from transformers import LlamaConfig

    from blockcert.arch.toy import byte_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(**SHAPE, tie_word_embeddings=False)
    g = torch.Generator().manual_seed(0)
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    weight_map = {}

    def shard(name: str, tensors: dict) -> None:
        save_file(tensors, out / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})

    shard("embed.safetensors", {"model.embed_tokens.weight": rnd(v, d)})
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        shard(f"layer-{i:02d}.safetensors", {
            p + "input_layernorm.weight": torch.ones(d, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(d, dtype=torch.bfloat16),
            **{p + f"self_attn.{n}_proj.weight": rnd(d, d) for n in "qkvo"},
            p + "mlp.gate_proj.weight": rnd(f, d), p + "mlp.up_proj.weight": rnd(f, d),
            p + "mlp.down_proj.weight": rnd(d, f),
        })
        print(f"wrote layer {i}", flush=True)
    shard("head.safetensors", {"model.norm.weight": torch.ones(d, dtype=torch.bfloat16), "lm_head.weight": rnd(v, d)})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg.save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / ".cache" / "llama2-7b-shape")
    p.add_argument("--run", type=Path, default=Path(__file__).resolve().parent / ".cache" / "stream_7b_run")
    p.add_argument("--blocks", default="0,5,10,15,20")
    p.add_argument("--prompts", default="stress")
    a = p.parse_args()
    model_dir = write(a.out)
    weights_gib = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**30
    t0 = time.perf_counter()
    lm = blockcert.load_model(str(model_dir), streaming=True)
    shutil.rmtree(a.run, ignore_errors=True)
    run = blockcert.extract(lm, a.prompts, blocks=a.blocks, out=a.run)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    res = {"wall_s": wall, "peak_rss_gib": peak, "weights_on_disk_gib_bf16": weights_gib,
           "weights_float32_gib": 2 * weights_gib, "layer_loads": lm.weights.loads,
           "blocks": run.blocks, "epsilon": {i: c.metrics.epsilon for i, c in run.certificates.items()},
           "all_certified": run.all_certified, "n_tokens": run.summary.prompts.n_tokens,
           "threads": torch.get_num_threads(), "spooled_to": str(a.run.name)}
    print(json.dumps(res, indent=2))
    out = Path(__file__).resolve().parent / "results" / "stream_7b.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
