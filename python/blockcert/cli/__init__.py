"""The command line: a thin layer that parses, calls the public API and presents."""

from blockcert.cli import bounds, edit, fullmodel, lean, manifest, maxk, report, run, surrogates  # noqa: F401  (each registers its commands)
from blockcert.cli.app import app, main

__all__ = ["app", "main"]
