"""Versions recorded in every certificate."""

__version__ = "0.1.0"
# Bumped whenever the interpreter's numerics change: certificates record it.
INTERPRETER_VERSION = "blockcert-interp/1"
