"""Benchmark: replay time of each surrogate family against the native block, beside its size.

Per block and family, the same recorded input is run by the native `LlamaDecoderLayer` and by the
interpreter on the family's surrogate, interleaved A/B repetitions, median of each; time ratio =
surrogate / native, size ratio = the surrogate's weight bytes / the native block's (counted from the IR's
tensors). Trace-ranked kinds are ranked on the same prompts' traces, as `blockcert extract` does.

Usage: python bench/surrogates_vs_native.py [--model smollm2-135m] [--prompts stress] [--blocks 0,15,29]
       [--kinds exact,lowrank:64,...] [--reps 9]
Writes bench/results/surrogates_vs_native.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from blockcert.arch.loading import load_model
from blockcert.arch.native import NativeModel, encode
from blockcert.cli.app import quiet_hf as _quiet_hf
from blockcert.core.interpreter import run_block
from blockcert.core.traces import BlockTrace
from blockcert.store.prompts import bundled
from blockcert.surrogates import Evidence, derive_named, weights_size

HERE = Path(__file__).parent
KINDS = ("exact", "lowrank:64", "lowrank:64,mlp", "prune-heads:6", "prune-neurons:0.5", "int8",
         "lowrank:64+prune-neurons:0.5")


def _once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(model: str, prompts: str, blocks: list[int], kinds: list[str], reps: int) -> dict:
    lm = load_model(model)
    native = NativeModel(lm)
    batch = encode(lm, bundled(prompts).prompts)
    x, ctx = native.embed(batch)
    rows = []
    with torch.no_grad():
        for i in range(max(blocks) + 1):
            y = native.block(i, x, ctx)
            if i in blocks:
                exact = native.extract_ir(i)
                trace = BlockTrace(x, y, batch.valid, batch.positions, torch.ones(1), torch.ones(1))
                ev = Evidence(trace, "bench")
                for kind in kinds:
                    ir = derive_named(exact, kind, ev)
                    run = lambda ir=ir, x=x: run_block(ir, x, batch.valid, batch.positions)  # noqa: E731
                    nat = lambda i=i, x=x: native.block(i, x, ctx)  # noqa: E731
                    run(), nat()  # warm-up
                    tn, ts = [], []
                    for _ in range(reps):  # interleaved so drift hits both alike
                        tn.append(_once(nat))
                        ts.append(_once(run))
                    rows.append({"block": i, "kind": kind, "native_s": statistics.median(tn),
                                 "surrogate_s": statistics.median(ts),
                                 "size_ratio": weights_size(ir).bytes / weights_size(exact).bytes})
            x = y
    return {"model": model, "prompts": prompts, "tokens": int(batch.valid.sum()), "reps": reps,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "rows": rows}


def table(res: dict) -> str:
    kinds = list(dict.fromkeys(r["kind"] for r in res["rows"]))
    out = ["| surrogate | size ratio (bytes) | time ratio (replay / native) |", "|---|---|---|"]
    for k in kinds:
        rs = [r for r in res["rows"] if r["kind"] == k]
        size = statistics.mean(r["size_ratio"] for r in rs)
        t = sum(r["surrogate_s"] for r in rs) / sum(r["native_s"] for r in rs)
        out.append(f"| `{k}` | {size:.3f} | {t:.2f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", default="stress")
    ap.add_argument("--blocks", default="0,15,29")
    ap.add_argument("--kinds", default=",".join(KINDS).replace("lowrank:64,mlp", "lowrank:64;mlp"),
                    help="kinds separated by commas (write lowrank:R;mlp for lowrank:R,mlp)")
    ap.add_argument("--reps", type=int, default=9)
    a = ap.parse_args()
    _quiet_hf()
    kinds = [k.replace(";", ",") for k in a.kinds.split(",")]
    res = measure(a.model, a.prompts, [int(b) for b in a.blocks.split(",")], kinds, a.reps)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "surrogates_vs_native.json").write_text(json.dumps(res, indent=2) + "\n")
    print(table(res), end="")


if __name__ == "__main__":
    main()
