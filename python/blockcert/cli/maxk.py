"""`blockcert maxk`: train Max-of-K models and prove accuracy lower bounds for them."""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import app
from blockcert.errors import BlockCertError
from blockcert.maxk.prove import run_prove, run_train
from blockcert.maxk.train import TrainConfig
from blockcert.maxk.verify import verify_maxk

maxk_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The Max-of-K study: train, then prove accuracy lower bounds (brute, cubic, subcubic).")


def _one_line_errors(fn):
    @wraps(fn)
    def run(*a, **kw):
        try:
            return fn(*a, **kw)
        except BlockCertError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None

    return run


@maxk_app.command("train")
@_one_line_errors
def train_cmd(
    seed: Annotated[int, typer.Option(help="seed of the initialisation, data and test streams")] = 0,
    k: Annotated[int, typer.Option("--k", help="context length K (the model's n_ctx)")] = 4,
    out: Annotated[Path, typer.Option(help="study directory to write")] = Path("runs/maxk"),
    steps: Annotated[int, typer.Option(help="AdamW steps of batch 128")] = 3000,
    d_vocab: Annotated[int, typer.Option(help="vocabulary size")] = 64,
) -> None:
    """Train one model (CPU, deterministic) and write weights.safetensors + train_record.json."""

    if k < 2 or k > 16:
        raise BlockCertError(f"--k {k} is out of range; use 2..16")
    if d_vocab < 2 or d_vocab > 512:
        raise BlockCertError(f"--d-vocab {d_vocab} is out of range; use 2..512")
    if steps < 0:
        raise BlockCertError("--steps must be ≥ 0")
    rec = run_train(out, seed, TrainConfig(d_vocab=d_vocab, k=k, steps=steps))
    print(f"seed {seed}  K {k}  final loss {rec.final_loss:.3g}  test accuracy "
          f"{rec.test_correct}/{rec.config.n_test}  ({rec.wall_seconds:.1f} s)")
    print(f"wrote {out}")


@maxk_app.command("prove")
@_one_line_errors
def prove_cmd(
    directory: Annotated[Path, typer.Argument(help="study directory written by `maxk train`")],
    method: Annotated[str, typer.Option(help="brute, cubic or subcubic")] = "cubic",
    rank: Annotated[int, typer.Option(help="subcubic: rank of the EQKE approximation")] = 1,
    window: Annotated[int, typer.Option(help="subcubic: width of the coupled value table near the max")] = 8,
) -> None:
    """Prove an accuracy lower bound and write proof_<method>.json and its Lean module."""

    if rank < 1 or window < 0:
        raise BlockCertError("--rank must be ≥ 1 and --window ≥ 0")
    c = run_prove(directory, method, rank=rank, window=window)
    print(f"method {c.method}: bound {c.bound_num}/{c.bound_den} = {c.bound:.6f}")
    if c.accuracy_num is not None:
        print(f"true accuracy (brute force) {c.accuracy_num}/{c.bound_den} = {c.accuracy_num / c.bound_den:.6f}"
              f"   normalised bound {c.normalised:.4f}")
    else:
        print("true accuracy: unknown (run --method brute first)")
    if c.ambiguous is not None:
        print(f"ambiguous under float64 enclosures: {sum(c.ambiguous)} sequences")
    print(f"cost: {c.cost.flops:.3e} FLOPs, {c.cost.wall_seconds:.3f} s, {c.cost.cases_evaluated} cases")
    print(f"wrote {directory / f'proof_{c.method}.json'}")


@maxk_app.command("verify")
@_one_line_errors
def verify_cmd(
    directory: Annotated[Path, typer.Argument(help="study directory")],
    recompute: Annotated[bool, typer.Option(help="re-run cubic/subcubic proofs and compare counts")] = True,
) -> None:
    """Re-check hashes, digests, the exact arithmetic and the Lean text of every certificate."""

    problems = verify_maxk(directory, recompute=recompute)
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        raise typer.Exit(1)
    print(f"OK {directory}")


app.add_typer(maxk_app, name="maxk")
