"""The surrogate-kind registry: how a surrogate of each kind is derived from the exact-copy IR.

`blockcert extract --surrogate KIND[:ARGS]` and `blockcert.extract(..., surrogate=...)` look the kind up
here. A kind declares how to parse its arguments and how to derive its IR; the size accounting (parameters
and bytes of the IR's tensors) is computed from the tensors themselves, so no kind can claim a size it
does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from blockcert.core.ir import BlockIR
from blockcert.errors import BlockCertError


@dataclass(frozen=True)
class SurrogateKind:
    name: str
    help: str
    derive: Callable[[BlockIR, str], BlockIR]  # (exact IR, argument text) -> surrogate IR
    takes_args: bool = False


SURROGATES: dict[str, SurrogateKind] = {}


def register(kind: SurrogateKind) -> SurrogateKind:
    SURROGATES[kind.name] = kind
    return kind


def parse_kind(text: str) -> tuple[SurrogateKind, str]:
    """`KIND` or `KIND:ARGS` -> (registered kind, argument text); one error line naming the allowed kinds."""
    name, _, args = text.partition(":")
    kind = SURROGATES.get(name)
    if kind is None:
        raise BlockCertError(f"--surrogate {text!r}: unknown kind; use one of {', '.join(SURROGATES)}")
    if args and not kind.takes_args:
        raise BlockCertError(f"--surrogate {text!r}: kind {name} takes no arguments")
    return kind, args


def derive(exact: BlockIR, text: str) -> BlockIR:
    kind, args = parse_kind(text)
    return kind.derive(exact, args)


@dataclass(frozen=True)
class Size:
    parameters: int
    bytes: int


def ir_size(ir: BlockIR) -> Size:
    """Parameters and bytes of every tensor the IR stores (rotary tables included: they are stored too)."""
    ts = ir.tensors.values()
    return Size(parameters=sum(t.numel() for t in ts), bytes=sum(t.numel() * t.element_size() for t in ts))


def _exact(ir: BlockIR, _args: str) -> BlockIR:
    return ir


register(SurrogateKind("exact", "the native block's weights, copied", _exact))


def rounded(narrow: torch.dtype):
    def derive_rounded(ir: BlockIR, _args: str) -> BlockIR:
        # Rotary tables are never rounded: they are positions, not learned weights.
        tensors = {k: v if k.startswith("rope.") else v.to(narrow).to(v.dtype) for k, v in ir.tensors.items()}
        return BlockIR(ir.spec, tensors)

    return derive_rounded


for _name, _dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
    register(SurrogateKind(_name, f"weights rounded to {_name} (stored in the model dtype)", rounded(_dtype)))


def derive_named(exact: BlockIR, text: str) -> BlockIR:
    """Derive and record the kind in the spec (ir.json says what the tensors are)."""
    ir = derive(exact, text)
    return BlockIR(ir.spec.model_copy(update={"surrogate": text}), ir.tensors)
