"""Surrogate kinds: how a surrogate is derived from a block's exact-copy IR (registry.py)."""

from blockcert.surrogates.registry import SURROGATES, SurrogateKind, derive_named, ir_size, parse_kind, register

__all__ = ["SURROGATES", "SurrogateKind", "derive_named", "ir_size", "parse_kind", "register"]
