"""`blockcert bound RUN_DIR`: Lipschitz constants of every kind and the instantiated global bound (issue 5).

Registered on the main app by cli.py. Writes RUN_DIR/bound.json (schema blockcert.bound/1), bound.md (the
Markdown tables, also printed on stdout) and bound_ratio.png; progress goes to stderr. Fails (one line,
exit 1) on bad input, and when a measured deviation exceeds a bound that claims to be sound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
PlotOpt = Annotated[bool, typer.Option("--plot/--no-plot", help="write bound_ratio.png")]


def register(app: typer.Typer) -> None:
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
    ) -> None:
        """Bound every block (sound global, local and pointwise constants; empirical; trajectory); compose them."""
        from .bounds.artifact import BOUND_FILE, BOUND_PLOT, BOUND_TABLE, record_in_certificate
        from .bounds.report import markdown
        from .bounds.report import plot as draw
        from .bounds.run import BoundOptions, analyse_run, build_artifact, stitch_measured
        from .files import atomic_write_bytes, atomic_write_json
        from .fullmodel import CERTIFICATE_FILE
        from .progress import say

        opts = BoundOptions(run_dir, radius, model, empirical_tokens, power_iters, threads, pieces)
        src, results = analyse_run(opts)
        art = build_artifact(src, results, opts, stitch_measured(run_dir, results))
        atomic_write_json(run_dir / BOUND_FILE, art.model_dump(mode="json"))
        if record_in_certificate(run_dir, art):
            say(f"recorded the bound in {run_dir / CERTIFICATE_FILE}")
        table = markdown(art)
        atomic_write_bytes(run_dir / BOUND_TABLE, table.encode("utf-8"))
        if plot:
            draw(art, run_dir / BOUND_PLOT)
        print(table, end="")
        say(f"wrote {run_dir / BOUND_FILE}")
