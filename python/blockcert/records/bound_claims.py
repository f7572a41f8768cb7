"""The instantiated global bound of every kind, from bound.json's own per-block numbers, in exact rationals.

`blockcert bound` makes its claims with these functions and `blockcert verify` re-derives them from the
file with the same ones, so a claim either follows from the numbers beside it or is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from blockcert.core.exact import decimal_str, prefix_bounds, round_up_sig, to_fraction
from blockcert.records.bound import (
    FORMAL_KINDS,
    KIND_NEEDS,
    KINDS,
    PER_PROMPT_KINDS,
    SOUND_KINDS,
    BlockBound,
    BoundArtifact,
    Constant,
    kinds_of,
)

CLAIM_DIGITS = 6  # significant digits of a claimed bound (rounded up)


def constant(b: BlockBound, kind: str) -> Constant:
    return next(c for c in b.constants if c.kind == kind)


def _epsilons(b: BlockBound, kind: str) -> tuple[float, ...]:
    """The per-prompt ε a kind composes: in d_{i+1} for metric, the max-token distance for every other kind."""
    return b.epsilon_metric_per_prompt if kind == "metric" else b.epsilon_composed_per_prompt


def prompt_prefixes(blocks: Sequence[BlockBound], kind: str) -> list[list[Fraction]]:
    """Per prompt, the exact bound on that prompt's deviation after k = 1..L blocks (kinds in PER_PROMPT_KINDS):
    that prompt's own ε and constants. For metric the bound after k blocks is in d_k (the last in max-token)."""
    n = len(blocks[0].epsilon_composed_per_prompt)
    return [
        prefix_bounds([to_fraction(_epsilons(b, kind)[p]) for b in blocks],
                      [to_fraction(constant(b, kind).per_prompt[p]) for b in blocks])
        for p in range(n)
    ]


def per_prompt_prefixes(blocks: Sequence[BlockBound]) -> list[list[Fraction]]:
    return prompt_prefixes(blocks, "per_prompt")


def kind_prefixes(blocks: Sequence[BlockBound]) -> dict[str, list[Fraction]]:
    """Per kind, the exact bound after k = 1..L blocks: b ← L_i·b + ε_i (exact.prefix_bounds) with ε_i the composed
    ε (`epsilon_composed`); per-prompt kinds: the max over prompts of each prompt's own recursion. An undefined
    constant (a trajectory ratio 0/0, only where x̂_i = x_i) multiplies a zero deviation and enters as 0."""
    eps = [to_fraction(b.epsilon_composed) for b in blocks]
    out = {}
    for kind in kinds_of(blocks):
        if kind in PER_PROMPT_KINDS:
            out[kind] = [max(bs) for bs in zip(*prompt_prefixes(blocks, kind), strict=True)]
        else:
            out[kind] = prefix_bounds(eps, [to_fraction(constant(b, kind).value or 0.0) for b in blocks])
    return out


def measured_prompts(blocks: Sequence[BlockBound], kind: str) -> list[tuple[float, ...]]:
    """Per block, per prompt, the measured deviation after it, in the distance the kind's prefix bound uses."""
    return [b.output_deviation_metric_per_prompt if kind == "metric" else b.output_deviation_per_prompt
            for b in blocks]


def measured_prefix(blocks: Sequence[BlockBound], kind: str) -> list[float]:
    return [max(ms) for ms in measured_prompts(blocks, kind)]


def claimed(prefix: list[Fraction]) -> Fraction:
    return round_up_sig(prefix[-1], CLAIM_DIGITS)


def log10(q: Fraction) -> float | None:
    if q <= 0:
        return None
    return math.log10(q.numerator) - math.log10(q.denominator)


def violations(blocks: Sequence[BlockBound]) -> list[str]:
    """Where a sound kind's bound after some prefix of blocks is below the deviation it bounds (per-prompt kinds
    also prompt by prompt: their claim is per prompt before the max). Each is a bug or a violated hypothesis."""
    out = []
    prefix = kind_prefixes(blocks)
    present = kinds_of(blocks)
    for kind in (k for k in SOUND_KINDS if k in present):
        for k, (b, m) in enumerate(zip(prefix[kind], measured_prefix(blocks, kind), strict=True), start=1):
            if to_fraction(m) > b:
                out.append(f"the measured deviation after {k} stitched block(s), {m:.9g}, exceeds the {kind} bound "
                           f"{float(b):.9g}, which claims to be sound")
    for kind in (k for k in PER_PROMPT_KINDS if k in present):
        ms = measured_prompts(blocks, kind)
        for p, bounds in enumerate(prompt_prefixes(blocks, kind)):
            for k, (b, m) in enumerate(zip(bounds, ms, strict=True), start=1):
                if to_fraction(m[p]) > b:
                    out.append(f"prompt {p}: the measured deviation after {k} stitched block(s), {m[p]:.9g}, "
                               f"exceeds its {kind} bound {float(b):.9g}, which claims to be sound")
    return out


def kind_set_problems(art: BoundArtifact) -> list[str]:
    """The kinds the file says it computed, against what every block and bound carries: one order (KINDS),
    no duplicates, each kind's prerequisites present, and a formal kind among them."""
    kinds = tuple(art.kinds)
    out = []
    if not kinds or list(kinds) != [k for k in KINDS if k in kinds]:
        out.append(f"field kinds {list(kinds)} is empty, repeats a kind or is not in the order {list(KINDS)}")
    if any(kinds_of([b]) != kinds for b in art.blocks):
        out.append(f"some block's constants are not exactly the kinds {list(kinds)}")
    # claimed_bound and ratios are JSON objects (written with sorted keys): compared as sets
    if tuple(kb.kind for kb in art.bounds) != kinds or set(art.claimed_bound) != set(kinds) or set(
            art.ratios) != set(kinds):
        out.append(f"the bounds and claimed bounds are not exactly the kinds {list(kinds)}")
    for k in kinds:
        missing = [n for n in KIND_NEEDS.get(k, ()) if n not in kinds]
        if missing:
            out.append(f"kind {k} needs kind {missing[0]}, which the file does not carry")
    if art.formal_kind not in kinds or art.formal_kind not in FORMAL_KINDS:
        out.append(f"formal_kind {art.formal_kind!r} is not one of the computed kinds with one constant per block")
    return out


def claim_problems(art: BoundArtifact) -> list[str]:
    """Everything bound.json claims, re-derived from its per-block numbers; one line per disagreement."""
    q = "bound.json: "
    blocks = art.blocks
    if not blocks:
        return [q + "bounds no block"]
    kinds = kinds_of(blocks)
    bad = kind_set_problems(art)
    if bad:
        return [q + p for p in bad]
    n = len(blocks[0].epsilon_per_prompt)
    lists = ("epsilon_per_prompt", "output_deviation_per_prompt", "epsilon_composed_per_prompt")
    if "metric" in kinds:
        lists += ("epsilon_metric_per_prompt", "output_deviation_metric_per_prompt")
    if any(len(getattr(b, f)) != n for b in blocks for f in lists) or any(
            len(constant(b, k).per_prompt) != n for b in blocks for k in PER_PROMPT_KINDS if k in kinds):
        return [q + "per-prompt lists differ in length between blocks"]
    prefix = kind_prefixes(blocks)
    out = []
    for kb in art.bounds:
        c = claimed(prefix[kb.kind])
        if kb.claimed_bound != decimal_str(c) or art.claimed_bound.get(kb.kind) != decimal_str(c):
            out.append(q + f"the {kb.kind} claimed bound is not what its per-block numbers give ({decimal_str(c)})")
        if kb.prefix_log10_bound != tuple(log10(b) for b in prefix[kb.kind]):
            out.append(q + f"the {kb.kind} bounds after each block are not what its per-block numbers give")
        if list(kb.prefix_measured) != measured_prefix(blocks, kb.kind):
            out.append(q + f"the {kb.kind} measured deviations are not the per-block ones")
    measured = [b.output_deviation for b in blocks]
    if list(art.measured_prefix) != measured or art.measured_deviation != measured[-1]:
        out.append(q + "the measured deviations are not the per-block output deviations")
    if any(max(b.output_deviation_per_prompt) != b.output_deviation or max(b.epsilon_per_prompt) != b.epsilon
           or max(b.epsilon_composed_per_prompt) != b.epsilon_composed for b in blocks):
        out.append(q + "a block's per-prompt figures do not have its own figure as their max")
    out += [q + v for v in violations(blocks)]
    return out
