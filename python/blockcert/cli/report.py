"""`blockcert report RUN_DIR [--out FILE.html]`: the run as one self-contained HTML page, verified when made.

Writes the report (default RUN_DIR/report.html) and its PNG plots beside it; progress goes to stderr, the
report's path and the verifier's verdict to stdout. Exit 0 when the report was written, whatever the
verdict it shows (the verdict is the report's content; `blockcert verify` is the command whose exit says it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import app, quiet_hf, stdout
from blockcert.workflows.report import build_report


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `blockcert extract`")],
    out: Annotated[Path | None, typer.Option("--out", help="HTML file to write (default: RUN_DIR/report.html)")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="the run's model, to show tokens as text (checked by weights hash; "
                                     "default: tokens shown as ids, no model loaded)"),
    ] = None,
) -> None:
    """Write one self-contained HTML report of the run: header, verification, blocks, tokens, stitching, studies."""

    quiet_hf()
    res = build_report(run_dir, out, model)
    stdout.print(f"verification: {res.headline}", soft_wrap=True)
    print(res.path)
