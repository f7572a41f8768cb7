"""`blockcert lean` (write, optionally build, a run's Lean module) and `blockcert check` (the Lean checker's
twin in Python: same output, same exit codes as `lake exe blockcert_check`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import app
from blockcert.formal.mirror import check as formal_check
from blockcert.present.formal import report_lines
from blockcert.store.formal_json import FormalInputError, read_formal
from blockcert.workflows.lean import run_lean

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2  # as BlockCert/Report.lean `cliMain`





@app.command(name="lean")
def lean(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by extract")],
    build: Annotated[bool, typer.Option("--build", help="also run `lake build` (needs a Lean toolchain)")] = False,
    lean_root: Annotated[
        Path | None, typer.Option(help="the BlockCert Lean project (default: the one this package came from)")
    ] = None,
    project: Annotated[
        bool, typer.Option("--project", help="write the module into the Lean project's BlockCert/Runs/ instead")
    ] = False,
) -> None:
    """Write the run's Lean module and formal_run.json; print the Python mirror's verdict and bound.

    By default the module goes into the run directory, which becomes a Lake package requiring BlockCert by
    path (`lake build` there checks it); --project writes it into BlockCert/Runs/ instead."""

    res = run_lean(run_dir, build, lean_root, into_project=project)
    for line in report_lines(res.run):
        print(line)
    print(f"wrote {res.module} and {res.formal_json}")
    for note in res.notes:
        print(f"note: {note}")
    if res.build is not None:
        for line in res.build.lines:
            print(line, file=sys.stderr)
        print(f"lake build: {'OK' if res.build.ok else 'FAILED'}")
    ok = res.check_ok and (res.build is None or res.build.ok)
    raise typer.Exit(EXIT_PASS if ok else EXIT_FAIL)


@app.command(name="check")
def check(
    path: Annotated[Path, typer.Argument(help="run directory (its formal_run.json) or a formal_run.json file")],
) -> None:
    """Check a formal run exactly, as `lake exe blockcert_check` does: exit 0 pass, 1 fail, 2 bad input."""

    try:
        run = read_formal(path)
    except FormalInputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for line in report_lines(run):
        print(line)
    raise typer.Exit(EXIT_PASS if formal_check(run) else EXIT_FAIL)
