"""Extraction against its physical floor, side by side with a plain Hugging Face forward in one run.

    python bench/extract_cost.py [--layers 22 --hidden 2048 --inter 5632 --heads 32 --kv 4 --tokens 256]

Writes a random-init Llama of the given shape (TinyLlama's by default) once under bench/.cache/, then in one
process: (1) a plain HF forward over the same prompts, one prompt at a time; (2) `blockcert.extract` of
blocks 0,5,10,15,20 with exact surrogates, and again with bf16 surrogates (which need stitched suffixes);
(3) peak RSS. Reports each as seconds and as a ratio to the plain forward, against the floor in forwards
(exact: 1 forward, no suffix; bf16: 1 + Σ_i (L-1-i)/L forwards).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

import blockcert

ROOT = Path(__file__).resolve().parent


def write_model(out: Path, a) -> Path:
    if (out / "config.json").is_file():
        return out
    from transformers import LlamaConfig, LlamaForCausalLM

    from blockcert.arch.toy import byte_tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=a.hidden, intermediate_size=a.inter, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.kv, max_position_embeddings=2048)
    LlamaForCausalLM(cfg).save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    return out


def prompts(n: int, tokens: int) -> list[str]:
    g = torch.Generator().manual_seed(1)
    # The byte tokenizer maps one byte to one token: `tokens` printable characters are `tokens` tokens.
    return ["".join(chr(33 + int(c)) for c in torch.randint(0, 90, (tokens,), generator=g)) for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser()
    for name, default in (("layers", 22), ("hidden", 2048), ("inter", 5632), ("heads", 32), ("kv", 4),
                          ("tokens", 256), ("prompts", 10)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--blocks", default="0,5,10,15,20")
    p.add_argument("--streaming", action="store_true")
    a = p.parse_args()
    model_dir = write_model(ROOT / ".cache" / f"llama-{a.layers}x{a.hidden}", a)
    lm = blockcert.load_model(str(model_dir), streaming=a.streaming)
    texts = prompts(a.prompts, a.tokens)
    blocks = [int(b) for b in a.blocks.split(",")]
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in texts:
            ids = lm.tokenizer(t, return_tensors="pt")["input_ids"]
            lm.model(input_ids=ids, use_cache=False)
    native = time.perf_counter() - t0
    rows = {}
    for kind in ("exact", "bf16"):
        t0 = time.perf_counter()
        run = blockcert.extract(lm, texts, blocks=blocks, surrogate=kind)
        rows[kind] = time.perf_counter() - t0
        assert run.all_certified or kind != "exact"
    L = lm.num_layers
    floor = {"exact": 1.0, "bf16": 1.0 + sum(L - 1 - i for i in blocks) / L}
    weights_gib = sum(p.numel() * p.element_size() for p in lm.model.parameters() if p.device.type != "meta") / 2**30
    out = {
        "shape": vars(a), "native_forward_s": native,
        "extract_s": rows, "ratio_to_native": {k: v / native for k, v in rows.items()},
        "floor_forwards": floor, "ratio_to_floor": {k: rows[k] / native / floor[k] for k in rows},
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "resident_weights_gib_at_end": weights_gib, "threads": torch.get_num_threads(),
    }
    print(json.dumps(out, indent=2))
    (ROOT / "results").mkdir(exist_ok=True)
    tag = "stream" if a.streaming else "eager"
    (ROOT / "results" / f"extract_cost_{a.layers}x{a.hidden}_{tag}.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
