"""The command line: a thin layer that parses, calls the public API and presents."""

from blockcert.cli import bounds, fullmodel, lean, maxk, run  # noqa: F401  (each registers its commands)
from blockcert.cli.app import app, main

__all__ = ["app", "main"]
