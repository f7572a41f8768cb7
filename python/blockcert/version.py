"""Versions recorded in every certificate."""

__version__ = "0.1.0"
# Bumped whenever the interpreter's numerics change: certificates record it.
INTERPRETER_VERSION = "blockcert-interp/1"

# The public API's names (blockcert.api defines them; the root package re-exports them lazily): one list.
API_NAMES = ("Model", "Report", "Run", "bound", "extract", "lean_module", "load_model", "load_run", "stitch",
             "to_formal", "verify", "wrap")
