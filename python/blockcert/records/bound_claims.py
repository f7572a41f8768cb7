"""The instantiated global bound of every kind, from bound.json's own per-block numbers, in exact rationals.

`blockcert bound` makes its claims with these functions and `blockcert verify` re-derives them from the
file with the same ones, so a claim either follows from the numbers beside it or is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from blockcert.core.exact import decimal_str, prefix_bounds, round_up_sig, to_fraction
from blockcert.records.bound import KINDS, SOUND_KINDS, BlockBound, BoundArtifact, Constant

CLAIM_DIGITS = 6  # significant digits of a claimed bound (rounded up)


def constant(b: BlockBound, kind: str) -> Constant:
    return next(c for c in b.constants if c.kind == kind)


def per_prompt_prefixes(blocks: Sequence[BlockBound]) -> list[list[Fraction]]:
    """Per prompt, the exact bound on that prompt's deviation after k = 1..L blocks (kind per_prompt)."""
    n = len(blocks[0].epsilon_per_prompt)
    return [
        prefix_bounds([to_fraction(b.epsilon_per_prompt[p]) for b in blocks],
                      [to_fraction(constant(b, "per_prompt").per_prompt[p]) for b in blocks])
        for p in range(n)
    ]


def kind_prefixes(blocks: Sequence[BlockBound]) -> dict[str, list[Fraction]]:
    """Per kind, the exact bound after k = 1..L blocks: b ← L_i·b + ε_i (exact.prefix_bounds); per_prompt: the
    max over prompts of each prompt's own recursion. An undefined constant (a trajectory ratio 0/0, only where
    x̂_i = x_i) multiplies a zero deviation and enters as 0."""
    eps = [to_fraction(b.epsilon) for b in blocks]
    out = {}
    for kind in KINDS:
        if kind == "per_prompt":
            out[kind] = [max(bs) for bs in zip(*per_prompt_prefixes(blocks), strict=True)]
        else:
            out[kind] = prefix_bounds(eps, [to_fraction(constant(b, kind).value or 0.0) for b in blocks])
    return out


def claimed(prefix: list[Fraction]) -> Fraction:
    return round_up_sig(prefix[-1], CLAIM_DIGITS)


def log10(q: Fraction) -> float | None:
    if q <= 0:
        return None
    return math.log10(q.numerator) - math.log10(q.denominator)


def violations(prefix: dict[str, list[Fraction]], measured: Sequence[float],
               per_prompt: list[list[Fraction]] | None = None,
               measured_prompts: Sequence[Sequence[float]] = ()) -> list[str]:
    """Where a sound kind's bound after some prefix of blocks is below the measured deviation (per_prompt also
    prompt by prompt: its claim is per prompt before the max). Each is a bug or a violated hypothesis."""
    out = []
    for kind in SOUND_KINDS:
        for k, (b, m) in enumerate(zip(prefix[kind], measured, strict=True), start=1):
            if to_fraction(m) > b:
                out.append(f"the measured deviation after {k} stitched block(s), {m:.9g}, exceeds the {kind} bound "
                           f"{float(b):.9g}, which claims to be sound")
    for p, bounds in enumerate(per_prompt or []):
        for k, (b, ms) in enumerate(zip(bounds, measured_prompts, strict=True), start=1):
            if to_fraction(ms[p]) > b:
                out.append(f"prompt {p}: the measured deviation after {k} stitched block(s), {ms[p]:.9g}, exceeds "
                           f"its per_prompt bound {float(b):.9g}, which claims to be sound")
    return out


def claim_problems(art: BoundArtifact) -> list[str]:
    """Everything bound.json claims, re-derived from its per-block numbers; one line per disagreement."""
    q = "bound.json: "
    blocks = art.blocks
    if not blocks:
        return [q + "bounds no block"]
    n = len(blocks[0].epsilon_per_prompt)
    if any(len(b.epsilon_per_prompt) != n or len(b.output_deviation_per_prompt) != n
           or len(constant(b, "per_prompt").per_prompt) != n for b in blocks):
        return [q + "per-prompt lists differ in length between blocks"]
    prefix = kind_prefixes(blocks)
    per_prompt = per_prompt_prefixes(blocks)
    out = []
    for kb in art.bounds:
        c = claimed(prefix[kb.kind])
        if kb.claimed_bound != decimal_str(c) or art.claimed_bound.get(kb.kind) != decimal_str(c):
            out.append(q + f"the {kb.kind} claimed bound is not what its per-block numbers give ({decimal_str(c)})")
        if kb.prefix_log10_bound != tuple(log10(b) for b in prefix[kb.kind]):
            out.append(q + f"the {kb.kind} bounds after each block are not what its per-block numbers give")
    measured = [b.output_deviation for b in blocks]
    if list(art.measured_prefix) != measured or art.measured_deviation != measured[-1]:
        out.append(q + "the measured deviations are not the per-block output deviations")
    if any(max(b.output_deviation_per_prompt) != b.output_deviation or max(b.epsilon_per_prompt) != b.epsilon
           for b in blocks):
        out.append(q + "a block's per-prompt figures do not have its own figure as their max")
    out += [q + v for v in violations(prefix, measured, per_prompt, [b.output_deviation_per_prompt for b in blocks])]
    return out
