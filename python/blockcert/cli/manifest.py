"""`reseal`: the run manifest's upgrade command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import app, stdout
from blockcert.store import layout
from blockcert.workflows.reseal import reseal_run


@app.command()
def reseal(run_dir: Annotated[Path, typer.Argument(help="run directory whose summary.json to (re)seal")]) -> None:
    """Rebuild and seal summary.json from the block certificates and the files present (then run verify)."""

    summary = reseal_run(run_dir)
    stdout.print(f"sealed {run_dir / layout.SUMMARY}: {len(summary.blocks)} block(s), {len(summary.files)} file(s); "
                 f"now run `blockcert verify {run_dir}`")
