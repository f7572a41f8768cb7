"""`compress` and `ablate`: surrogates simpler than the block, and the paper's ablations (Table 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import app, stdout
from blockcert.cli.app import quiet_hf as _quiet_hf
from blockcert.present.tables import compress_table
from blockcert.workflows.ablate import AblateOptions, run_ablate
from blockcert.workflows.compress import FAMILIES, CompressOptions, check_options, run_compress

RunDirArg = Annotated[Path, typer.Argument(help="run directory written by `blockcert extract`")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="the run's model (default: the one it names)")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto (default: the run's)")]


@app.command()
def compress(
    run_dir: RunDirArg,
    family: Annotated[str, typer.Option(help="|".join(FAMILIES))] = "auto",
    target_cov_act: Annotated[float, typer.Option(help="a surrogate must also reach cov_act ≥ this")] = 0.99,
    blocks: Annotated[str | None, typer.Option(help="block indices like 0,5,10 or 3-7, or all (default: all)")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Per block, the smallest surrogate of the family still certified; written as the block's surrogate."""
    opts = CompressOptions(run_dir, family, target_cov_act, blocks, model, device)
    check_options(opts)  # before the model loads
    _quiet_hf()
    report = run_compress(opts)
    stdout.print(compress_table(report))


@app.command()
def ablate(
    run_dir: RunDirArg,
    blocks: Annotated[str, typer.Option(help="block indices like 0,5,10 or 3-7, or all")],
    sigma: Annotated[float, typer.Option(help="W_Q noise, relative to rms(W_Q)")] = 0.1,
    seed: Annotated[int, typer.Option(help="seed of the W_Q noise")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Drop RoPE, invert the mask, zero W_V, noise W_Q: each certified; a Markdown table and JSON."""
    _quiet_hf()
    _report, md = run_ablate(AblateOptions(run_dir, blocks, sigma, seed, model, device))
    print(md, end="")
    stdout.print(f"wrote {run_dir / 'ablations' / 'ablations.json'}")
