"""Benchmark: BlockCert's interpreter vs the native Hugging Face block, side by side in one process.

1. Per block, the same recorded input replayed by the native `LlamaDecoderLayer` and by the surrogate
   interpreter, interleaved A/B repetitions, median of each; ratio = interpreter / native.
2. `blockcert demo` as a whole process (wall time, peak RSS) in units of one native full forward pass
   over the same prompts, and of a process that only loads the model and runs that forward once.

Usage: python bench/replay_vs_native.py [--model smollm2-135m] [--dtype float32] [--reps 15]
Writes bench/results/replay_vs_native.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from blockcert.arch.loading import load_model
from blockcert.arch.native import NativeModel, encode
from blockcert.cli.app import quiet_hf as _quiet_hf
from blockcert.core.interpreter import run_block
from blockcert.store.prompts import bundled

HERE = Path(__file__).parent


def _median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def block_ratios(model: str, dtype: str, prompts: str, reps: int) -> dict:
    lm = load_model(model, dtype)
    native = NativeModel(lm)
    batch = encode(lm, bundled(prompts).prompts)
    x, ctx = native.embed(batch)
    rows = []
    with torch.no_grad():
        for i in range(lm.num_layers):
            ir = native.extract_ir(i)
            native.block(i, x, ctx), run_block(ir, x, batch.valid, batch.positions)  # warm-up
            nat, sur = [], []
            for _ in range(reps):  # interleaved so drift hits both alike
                nat.append(_median_time(lambda i=i, x=x: native.block(i, x, ctx), 1))
                sur.append(_median_time(lambda ir=ir, x=x: run_block(ir, x, batch.valid, batch.positions), 1))
            rows.append({"block": i, "native_s": statistics.median(nat), "surrogate_s": statistics.median(sur)})
            x = native.block(i, x, ctx)
        fwd = _median_time(
            lambda: lm.model(input_ids=batch.ids, attention_mask=batch.valid.long(), use_cache=False), reps
        )
    tot_n = sum(r["native_s"] for r in rows)
    tot_s = sum(r["surrogate_s"] for r in rows)
    return {
        "prompts": prompts, "tokens": int(batch.valid.sum()), "shape": list(batch.ids.shape),
        "blocks": rows, "native_total_s": tot_n, "surrogate_total_s": tot_s, "ratio": tot_s / tot_n,
        "worst_block_ratio": max(r["surrogate_s"] / r["native_s"] for r in rows), "native_forward_s": fwd,
    }


def _child(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all children so far: run the larger process last.
    return wall, max(peak, before) / 1024


def demo_cost(native_forward_s: float) -> dict:
    exe = Path(sys.executable).parent / "blockcert"
    forward_only = (
        "import torch; from blockcert.loading import load_model; from blockcert.native import encode; "
        "from blockcert.prompts import bundled; lm = load_model('smollm2-135m'); "
        "b = encode(lm, bundled('default').prompts); "
        "torch.no_grad()(lambda: lm.model(input_ids=b.ids, attention_mask=b.valid.long()))()"
    )
    base_wall, base_rss = _child([sys.executable, "-c", forward_only])
    with tempfile.TemporaryDirectory() as d:
        demo_wall, demo_rss = _child([str(exe), "demo", "--out", str(Path(d) / "demo")])
    return {
        "demo_wall_s": demo_wall, "demo_peak_rss_mib": demo_rss,
        "load_and_forward_wall_s": base_wall, "load_and_forward_peak_rss_mib": base_rss,
        "demo_in_native_forwards": demo_wall / native_forward_s,
        "demo_vs_load_and_forward": demo_wall / base_wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    _quiet_hf()
    res = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "model": args.model, "dtype": args.dtype}
    for prompts in ("default", "stress"):
        res[prompts] = block_ratios(args.model, args.dtype, prompts, args.reps)
    if not args.skip_demo:
        res["demo"] = demo_cost(res["default"]["native_forward_s"])
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "replay_vs_native.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"machine: {res['machine']}; model {args.model}, {args.dtype}\n")
    print("| prompts | tokens | native blocks (s) | interpreter (s) | ratio | worst block ratio |")
    print("|---|---|---|---|---|---|")
    for p in ("default", "stress"):
        r = res[p]
        print(f"| {p} | {r['tokens']} | {r['native_total_s']:.4f} | {r['surrogate_total_s']:.4f} | "
              f"{r['ratio']:.3f} | {r['worst_block_ratio']:.3f} |")
    if "demo" in res:
        d = res["demo"]
        print(f"\n`blockcert demo`: {d['demo_wall_s']:.1f} s wall = {d['demo_in_native_forwards']:.0f} native forward "
              f"passes ({res['default']['native_forward_s'] * 1e3:.0f} ms each) = {d['demo_vs_load_and_forward']:.2f}× "
              f"a process that loads the model and runs one forward ({d['load_and_forward_wall_s']:.1f} s); "
              f"peak RSS {d['demo_peak_rss_mib']:.0f} MiB vs {d['load_and_forward_peak_rss_mib']:.0f} MiB.")


if __name__ == "__main__":
    main()
