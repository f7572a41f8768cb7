"""`blockcert bound RUN_DIR`: Lipschitz constants of every kind and the instantiated global bound.

The workflow (workflows/bound.py) writes RUN_DIR/bound.json (schema blockcert.bound/2), bound.md (the
Markdown tables, also printed on stdout) and bound_ratio.png; progress goes to stderr. Fails (one line,
exit 1) on bad input, and when a measured deviation exceeds a bound that claims to be sound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import app
from blockcert.present.progress import say
from blockcert.records.bound import BOUND_FILE, KINDS
from blockcert.workflows.bound import BoundOptions, run_bound

RadiusOpt = Annotated[
    float | None,
    typer.Option("--radius", help="bound on the max-token ball of this radius around every traced input "
                                  "(default: boxes covering the segment from each traced to each stitched input)"),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="the run's model: needed only for blocks the run holds no surrogate for "
                                 "(checked by weights hash)"),
]
EmpiricalOpt = Annotated[
    int, typer.Option("--empirical-tokens", help="output tokens per prompt for the empirical estimate (0: skip)")
]
ItersOpt = Annotated[int, typer.Option("--power-iters", help="power iterations of the empirical estimate")]
PiecesOpt = Annotated[int, typer.Option("--pieces", help="boxes covering each traced-to-stitched segment")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="torch threads (mostly small operations: 1 is fastest)")]
KindsOpt = Annotated[
    str, typer.Option("--kinds", help="comma-separated kinds to compute (global, local, metric, pointwise, "
                                      "per_prompt, empirical, trajectory); local and metric are ~95 % of the time")
]
PlotOpt = Annotated[bool, typer.Option("--plot/--no-plot", help="write bound_ratio.png")]


@app.command()
def bound(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `blockcert extract`")],
    radius: RadiusOpt = None,
    model: ModelOpt = None,
    empirical_tokens: EmpiricalOpt = 2,
    power_iters: ItersOpt = 8,
    pieces: PiecesOpt = 8,
    threads: ThreadsOpt = 1,
    plot: PlotOpt = True,
    kinds: KindsOpt = ",".join(KINDS),
) -> None:
    """Bound every block (sound global, local and pointwise constants; empirical; trajectory); compose them."""

    opts = BoundOptions(run_dir, radius, model, empirical_tokens, power_iters, threads, pieces,
                        tuple(k.strip() for k in kinds.split(",") if k.strip()))
    _art, table = run_bound(opts, plot)
    print(table, end="")
    say(f"wrote {run_dir / BOUND_FILE}")
