"""The surrogate-kind registry: how a surrogate of each kind is derived from the exact-copy IR.

`blockcert extract --surrogate KIND[:ARGS]` and `blockcert.extract(..., surrogate=...)` look the kind up
here. A kind declares how to parse its arguments and how to derive its IR; the size accounting (parameters
and bytes of the IR's tensors) is computed from the tensors themselves, so no kind can claim a size it
does not have.

Two kinds of derivation exist. Most kinds are functions of the weights alone: `derive(exact, args)`.
Trace-ranked kinds (`needs_traces=True`: head and neuron pruning) also read the block's certification
traces: `derive(exact, args, evidence)`, where `evidence` is the block's recorded `BlockTrace` and the
digest of the prompts it came from, so the ranking is measured on the certification prompts only and the
IR records it (`BlockSpec.derivation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from blockcert.core.ir import BlockIR
from blockcert.core.traces import BlockTrace
from blockcert.errors import BlockCertError


@dataclass(frozen=True)
class Evidence:
    """What a trace-ranked kind may look at: the block's certification traces, and where they came from."""

    trace: BlockTrace
    prompts_sha256: str  # SHA-256 of the token ids the traces were recorded on


@dataclass(frozen=True)
class SurrogateKind:
    name: str
    help: str
    # (exact IR, argument text) -> surrogate IR; with needs_traces, (exact IR, argument text, Evidence)
    derive: Callable[..., BlockIR]
    takes_args: bool = False
    needs_traces: bool = False
    # (exact IR, argument text) -> None, raising one BlockCertError line on bad arguments; runs before
    # anything is traced or written
    check: Callable[[BlockIR, str], None] | None = None


SURROGATES: dict[str, SurrogateKind] = {}


def register(kind: SurrogateKind) -> SurrogateKind:
    SURROGATES[kind.name] = kind
    return kind


def parse_kind(text: str) -> tuple[SurrogateKind, str]:
    """`KIND` or `KIND:ARGS` -> (registered kind, argument text); one error line naming the allowed kinds."""
    name, sep, args = text.partition(":")
    kind = SURROGATES.get(name)
    if kind is None:
        raise BlockCertError(
            f"--surrogate {text!r}: unknown kind; use one of {', '.join(allowed_forms())}"
        )
    if sep and not kind.takes_args:
        raise BlockCertError(f"--surrogate {text!r}: kind {name} takes no arguments")
    if kind.takes_args and not args:
        raise BlockCertError(f"--surrogate {text!r}: kind {name} needs arguments ({kind.help})")
    return kind, args


def allowed_forms() -> list[str]:
    return [f"{k.name}:ARGS" if k.takes_args else k.name for k in SURROGATES.values()]


def check_kind(exact: BlockIR, text: str) -> SurrogateKind:
    """Parse `text` and check its arguments against the block (rank, head count, ...)."""
    kind, args = parse_kind(text)
    if kind.check is not None:
        kind.check(exact, args)
    return kind


def derive(exact: BlockIR, text: str, evidence: Evidence | None = None) -> BlockIR:
    kind = check_kind(exact, text)
    _, args = parse_kind(text)
    if kind.needs_traces:
        if evidence is None:
            raise BlockCertError(
                f"--surrogate {text!r}: kind {kind.name} is ranked on the block's traces and is derived after "
                "tracing (blockcert extract and blockcert compress do that); this caller gave no traces"
            )
        return kind.derive(exact, args, evidence)
    return kind.derive(exact, args)


@dataclass(frozen=True)
class Size:
    parameters: int
    bytes: int


def ir_size(ir: BlockIR) -> Size:
    """Parameters and bytes of every tensor the IR stores (rotary tables included: they are stored too)."""
    ts = ir.tensors.values()
    return Size(parameters=sum(t.numel() for t in ts), bytes=sum(t.numel() * t.element_size() for t in ts))


def weights_size(ir: BlockIR) -> Size:
    """Parameters and bytes of the IR's learned tensors: every stored tensor but the rotary tables.

    The rotary tables are positions, not weights of the block (the native model computes them once for all
    blocks), so a surrogate's size and the native block's are compared on the weights; `ir_size` is the
    whole file. Both are counted from the tensors the IR holds, never from what a kind says it stores.
    """
    ts = [t for k, t in ir.tensors.items() if not k.startswith("rope.")]
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


def derive_named(exact: BlockIR, text: str, evidence: Evidence | None = None) -> BlockIR:
    """Derive and record the kind in the spec (ir.json says what the tensors are).

    `A+B` applies kind A, then kind B to A's result (low-rank attention with pruned neurons, say); each
    step's derivation keeps the one before as its `base`, so ir.json records the whole chain.
    """
    ir = exact
    for part in text.split("+"):
        before = ir.spec.derivation
        ir = derive(ir, part, evidence)
        d = ir.spec.derivation
        if d is not None and before is not None and d is not before:
            ir = BlockIR(ir.spec.model_copy(update={"derivation": d.model_copy(update={"base": before})}), ir.tensors)
    return BlockIR(ir.spec.model_copy(update={"surrogate": text}), ir.tensors)


def check_text(exact: BlockIR, text: str) -> list[SurrogateKind]:
    """Parse every part of `A+B` (arguments checked against the exact block) before anything runs."""
    return [check_kind(exact, part) for part in text.split("+")]


def needs_traces(text: str) -> bool:
    return any(parse_kind(part)[0].needs_traces for part in text.split("+"))
