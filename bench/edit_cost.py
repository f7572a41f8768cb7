"""Cost of one sweep configuration in units of a native greedy generation of the same completions.

    OMP_NUM_THREADS=1 python bench/edit_cost.py RUN_DIR [--block 15] [--alpha 0.33] [--max-new-tokens 48]

One configuration = the edited model's greedy completions of the corpus (the edited block through the
interpreter, arch/generate.py) plus its side effects (paired replay, ε_edit); the block's baseline is shared
by a sweep's configurations and is not counted. The reference is Hugging Face's own `generate` (greedy, KV
cache) producing exactly as many tokens per prompt as the edited completions hold. Writes
bench/results/edit_cost.json. Timings on shared cores: read the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blockcert.arch.generate import native_generate
from blockcert.edits.classify import DEFAULT_MARKERS
from blockcert.workflows.edit import EditSession, load_corpus, patch_from_spec, side_effects


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--block", type=int, default=15)
    ap.add_argument("--alpha", type=float, default=0.33)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--side-prompts", default="stress")
    a = ap.parse_args()
    s = EditSession(a.run_dir, load_corpus("refusal"), DEFAULT_MARKERS, a.side_prompts, a.max_new_tokens)
    edited = s.prepare(patch_from_spec({"kind": "scale_mlp", "block": a.block, "alpha": a.alpha}))
    t0 = time.perf_counter()
    comps = s.complete(a.block, edited, "edited completions")
    t1 = time.perf_counter()
    side_effects(s, a.block, edited)
    t2 = time.perf_counter()
    with torch.no_grad():
        for ids, c in zip(s.corpus_ids, comps, strict=True):
            n = len(c.token_ids)
            out = s.lm.model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                      use_cache=True, pad_token_id=s.lm.tokenizer.eos_token_id)
            assert out.shape[1] - len(ids) == n
    t3 = time.perf_counter()
    native_generate(s.native, s.corpus_ids[0], 1)  # warm path sanity
    res = {
        "run": str(a.run_dir), "block": a.block, "alpha": a.alpha, "max_new_tokens": a.max_new_tokens,
        "tokens_generated": sum(len(c.token_ids) for c in comps), "threads": torch.get_num_threads(),
        "edited_generation_s": t1 - t0, "side_effects_s": t2 - t1, "native_generate_s": t3 - t2,
        "generation_ratio": (t1 - t0) / (t3 - t2), "configuration_ratio": (t2 - t0) / (t3 - t2),
    }
    out = Path("bench/results/edit_cost.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
