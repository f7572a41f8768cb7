"""Surrogate kinds: how a surrogate is derived from a block's exact-copy IR (registry.py), one module per
family (lowrank.py, pruning.py, int8.py), the ablations of paper Table 3 (ablations.py), and densify
(dense.py): any surrogate in the dense form the bounds read."""

from blockcert.surrogates import int8, lowrank, pruning  # noqa: F401  (each registers its kinds)
from blockcert.surrogates.ablations import ABLATIONS, ablate
from blockcert.surrogates.dense import densify
from blockcert.surrogates.registry import (
    SURROGATES,
    Evidence,
    Size,
    SurrogateKind,
    check_text,
    derive_named,
    ir_size,
    needs_traces,
    parse_kind,
    register,
    weights_size,
)

__all__ = [
    "ABLATIONS", "SURROGATES", "Evidence", "Size", "SurrogateKind", "ablate", "check_text", "densify",
    "derive_named", "ir_size", "needs_traces", "parse_kind", "register", "weights_size",
]
