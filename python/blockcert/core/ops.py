"""The op registry: every op an IR may name, and the one walk over an op sequence.

The interpreter (interpreter.py) and the bounds (bounds/enclosed_ops.py, the pointwise enclosure) both walk
`BlockSpec.ops` with `walk`, each with its own table of implementations keyed by the names registered here,
so the residual bookkeeping exists once and an op unknown to either table is refused, never skipped.
A new op is registered here with its forward function, and given an enclosure and a Lipschitz rule in
bounds/ (tests/test_architecture.py checks that every registered op has all three).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from blockcert.core.ir import BlockSpec, Op
from blockcert.errors import BlockCertError

T = TypeVar("T")

# The op that closes a residual branch: residual <- residual + h, then h <- residual.
RESIDUAL = "residual"


@dataclass(frozen=True)
class OpDef:
    name: str
    doc: str
    # (spec, op, tensors, h, ctx) -> h: ctx carries the mask, positions and what the op records
    forward: Callable[..., Any]


OPS: dict[str, OpDef] = {}


def register(name: str, doc: str):
    def deco(fn):
        OPS[name] = OpDef(name, doc, fn)
        return fn

    return deco


def walk(spec: BlockSpec, step: Mapping[str, Callable[[Op, T], T]], add: Callable[[T, T], T], x: T) -> T:
    """Run `spec.ops` on x: `step[name](op, h)` for each op, `add` where a residual branch closes."""
    residual = h = x
    for op in spec.ops:
        if op.op == RESIDUAL:
            residual = add(residual, h)
            h = residual
            continue
        fn = step.get(op.op)
        if fn is None:
            raise BlockCertError(f"IR op {op.op!r} is not known to this BlockCert ({', '.join(sorted(OPS))})")
        h = fn(op, h)
    return residual
