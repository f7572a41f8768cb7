"""The `blockcert` Typer app, its shared options, and the entry point that turns errors into one line.

Command modules (run.py, fullmodel.py, bounds.py, lean.py) register themselves with `@app.command()`;
`blockcert.cli` imports them all. Command and option names are a contract: keep them stable.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from blockcert.errors import BlockCertError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Certified blockwise extraction of transformer mechanisms.",
)
stdout = Console(highlight=False)

ModelOpt = Annotated[
    str, typer.Option("--model", help="smollm2-135m, a model directory, a .gguf file or a cached hub id")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or float64")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto")]


def quiet_hf() -> None:
    """Transformers' own warnings and bars would interleave with BlockCert's progress on stderr."""
    from transformers.utils import logging as hf_logging  # heavy: imported only by commands that load a model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main() -> None:
    try:
        app()
    except BlockCertError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to complete the run", file=sys.stderr)
        sys.exit(130)
