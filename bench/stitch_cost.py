"""Benchmark: the cost of `blockcert stitch` in units of one native forward pass.

1. In one process, on the run's certified prompts with the same chunking as stitch: the native full
   forward (median of --reps) and the paired stitched replay stitch performs (baseline and stitched
   streams, every surrogate streamed from disk and hash-checked), interleaved A/B, median of each.
2. As whole processes: `blockcert stitch RUN_DIR` (on a hard-linked copy of the run, so the original
   is not touched) vs a process that only loads the model and runs one native forward: wall time and
   peak RSS of each (GNU time), peak RSS also with MALLOC_ARENA_MAX=1.

Usage: python bench/stitch_cost.py RUN_DIR [--reps 5] [--batch-size 8]
RUN_DIR must come from `blockcert extract` (e.g. --blocks all --prompts stress).
Writes bench/results/stitch_cost_<dtype>.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from blockcert.arch.loading import load_run_model
from blockcert.arch.native import NativeModel
from blockcert.arch.stitched import paired_replay
from blockcert.cli.app import quiet_hf as _quiet_hf
from blockcert.store.run_reader import block_certificate, certified_batch, load_certified_ir, load_run_summary

HERE = Path(__file__).parent


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def in_process(run_dir: Path, reps: int, batch_size: int) -> dict:
    summary = load_run_summary(run_dir)
    lm = load_run_model(summary, None, None)
    native = NativeModel(lm)
    batch = certified_batch(run_dir, summary, lm.pad_token_id)
    blocks = [e.index for e in summary.blocks]
    certs = {i: block_certificate(run_dir, summary, i) for i in blocks}
    chunks = [batch.rows(lo, lo + batch_size) for lo in range(0, batch.ids.shape[0], batch_size)]

    @torch.no_grad()
    def forward():
        for b in chunks:
            lm.model(input_ids=b.ids, attention_mask=b.valid.long(), use_cache=False)

    def stitched():
        paired_replay(native, batch, set(blocks), lambda i: load_certified_ir(run_dir, certs[i]), batch_size, "bench")

    forward(), stitched()  # warm-up
    fwd, sti = [], []
    for _ in range(reps):  # interleaved so drift hits both alike
        fwd.append(_timed(forward))
        sti.append(_timed(stitched))
    f, s = statistics.median(fwd), statistics.median(sti)
    return {
        "dtype": summary.model.dtype,
        "prompts": summary.prompts.name,
        "tokens": summary.prompts.n_tokens,
        "stitched_blocks": len(blocks),
        "num_layers": summary.model.num_layers,
        "native_forward_s": f,
        "stitched_replay_s": s,
        "replay_in_native_forwards": s / f,
        "model_weights_mib": sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**20,
        "largest_surrogate_file_mib": max(
            (run_dir / f"block_{i:03d}" / "ir.safetensors").stat().st_size for i in blocks
        )
        / 2**20,
    }


def _child(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process, measured by GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as f:
        t0 = time.perf_counter()
        subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", f.name, *cmd],
            check=True,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - t0, int(f.read().split()[-1]) / 1024


def whole_process(run_dir: Path, batch_size: int) -> dict:
    exe = Path(sys.executable).parent / "blockcert"
    forward_only = (
        "import sys, torch; from pathlib import Path; from blockcert.runinputs import *; "
        f"r = Path({str(run_dir)!r}); s = load_run_summary(r); lm = load_run_model(s, None, None); "
        "b = certified_batch(r, s, lm.pad_token_id); "
        f"torch.no_grad()(lambda: [lm.model(input_ids=b.rows(lo, lo + {batch_size}).ids, "
        f"attention_mask=b.rows(lo, lo + {batch_size}).valid.long(), use_cache=False) "
        f"for lo in range(0, b.ids.shape[0], {batch_size})])()"
    )
    # Glibc gives each torch worker thread its own malloc arena and keeps freed blocks there, so the
    # peak RSS of a process also measures allocator retention; one arena shows what the work needs.
    one_arena = {"MALLOC_ARENA_MAX": "1"}
    base_wall, base_rss = _child([sys.executable, "-c", forward_only])
    _, base_rss_1 = _child([sys.executable, "-c", forward_only], one_arena)
    with tempfile.TemporaryDirectory(dir=run_dir.parent) as d:
        copy = Path(d) / "run"
        shutil.copytree(run_dir, copy, copy_function=os.link)  # stitch replaces files, never edits them
        cmd = [str(exe), "stitch", str(copy), "--batch-size", str(batch_size)]
        wall, rss = _child(cmd)
        _, rss_1 = _child(cmd, one_arena)
    return {
        "load_and_forward_wall_s": base_wall,
        "load_and_forward_peak_rss_mib": base_rss,
        "stitch_wall_s": wall,
        "stitch_peak_rss_mib": rss,
        "stitch_vs_load_and_forward_wall": wall / base_wall,
        "stitch_vs_load_and_forward_rss": rss / base_rss,
        "load_and_forward_peak_rss_one_arena_mib": base_rss_1,
        "stitch_peak_rss_one_arena_mib": rss_1,
        "stitch_vs_load_and_forward_rss_one_arena": rss_1 / base_rss_1,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    _quiet_hf()
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}"
    }
    res.update(in_process(args.run_dir, args.reps, args.batch_size))
    res.update(whole_process(args.run_dir, args.batch_size))
    res["stitch_in_native_forwards"] = res["stitch_wall_s"] / res["native_forward_s"]
    (HERE / "results").mkdir(exist_ok=True)
    out = HERE / "results" / f"stitch_cost_{res['dtype']}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"machine: {res['machine']}\n")
    print(
        f"{res['stitched_blocks']}/{res['num_layers']} blocks stitched, {res['dtype']}, prompts '{res['prompts']}' "
        f"({res['tokens']} tokens); model weights {res['model_weights_mib']:.0f} MiB, largest surrogate file "
        f"{res['largest_surrogate_file_mib']:.1f} MiB\n"
    )
    print("| measure | seconds | native forwards |")
    print("|---|---:|---:|")
    print(f"| native forward | {res['native_forward_s']:.3f} | 1 |")
    print(
        f"| stitched replay (baseline + stitched, streamed) | {res['stitched_replay_s']:.3f} | "
        f"{res['replay_in_native_forwards']:.2f} |"
    )
    print(f"| `blockcert stitch` process | {res['stitch_wall_s']:.2f} | {res['stitch_in_native_forwards']:.1f} |")
    print(
        f"| load model + one forward process | {res['load_and_forward_wall_s']:.2f} | "
        f"{res['load_and_forward_wall_s'] / res['native_forward_s']:.1f} |"
    )
    print(
        f"\npeak RSS: `blockcert stitch` {res['stitch_peak_rss_mib']:.0f} MiB vs load + one native forward "
        f"{res['load_and_forward_peak_rss_mib']:.0f} MiB ({res['stitch_vs_load_and_forward_rss']:.2f}×); "
        f"wall {res['stitch_vs_load_and_forward_wall']:.2f}× that process"
    )
    print(
        f"peak RSS with MALLOC_ARENA_MAX=1: `blockcert stitch` {res['stitch_peak_rss_one_arena_mib']:.0f} MiB vs "
        f"{res['load_and_forward_peak_rss_one_arena_mib']:.0f} MiB "
        f"({res['stitch_vs_load_and_forward_rss_one_arena']:.2f}×)"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
