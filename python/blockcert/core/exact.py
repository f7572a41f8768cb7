"""Exact rational arithmetic for the instantiated global bound (paper eq. 14).

The one computation the formal side and the bound report must agree on, bit for bit:

    bound = Σ_i ε_i · Π_{j>i} L_j,   evaluated by the recursion  b ← L_i · b + ε_i  (b starts at 0).

Everything is `fractions.Fraction`: a float enters exactly (every finite binary float is a rational), the
recursion adds no rounding, and only the final *presentation* rounds, always outward (up for an upper bound,
down for a lower one), so a rounded claim is never weaker than the exact one it stands for.

Public API (kept small on purpose; `blockcert.formal` imports it):
    to_fraction(x)                  float | int | str | Fraction -> exact Fraction (rejects NaN, ±inf, negatives
                                    only where asked)
    global_bound(eps, lips)         Σ ε_i Π_{j>i} L_j, exactly
    prefix_bounds(eps, lips)        the recursion's value after each block (bound after k stitched blocks)
    round_up(q, digits) / round_down(q, digits)
                                    outward rounding to a multiple of 10^-digits
    round_up_sig(q, sig)            outward rounding to `sig` significant decimal digits (for huge/tiny values)
    decimal_str(q)                  exact decimal text of a Fraction whose denominator divides a power of 10
    float_up(q)                     the least float ≥ q (for display fields that must stay upper bounds)
    policy_value(alpha)             a policy threshold as the decimal it was given as (0.9 -> 9/10)
    meets(covered, total, alpha)    covered ≥ α·total exactly: the coverage test of the certificate and the checker
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

__all__ = [
    "to_fraction", "global_bound", "prefix_bounds", "round_up", "round_down", "round_up_sig",
    "decimal_str", "float_up", "policy_value", "meets",
]


def to_fraction(x: float | int | str | Fraction) -> Fraction:
    """The exact rational value of `x`. Floats convert exactly (no decimal detour); NaN and ±inf are refused."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"{x!r} is not a finite number")
    if isinstance(x, bool):
        raise TypeError("a bool is not a number here")
    return Fraction(x)


def _check(eps: Sequence[Fraction], lips: Sequence[Fraction]) -> None:
    if len(eps) != len(lips):
        raise ValueError(f"{len(eps)} epsilons but {len(lips)} Lipschitz constants")
    for name, seq in (("epsilon", eps), ("Lipschitz constant", lips)):
        for i, v in enumerate(seq):
            if not isinstance(v, Fraction):
                raise TypeError(f"{name} {i} is {type(v).__name__}, expected Fraction (use to_fraction)")
            if v < 0:
                raise ValueError(f"{name} {i} is negative ({v})")


def prefix_bounds(eps: Sequence[Fraction], lips: Sequence[Fraction]) -> list[Fraction]:
    """[b_1, ..., b_n] with b_{k} = Σ_{i<k} ε_i Π_{i<j<k} L_j: the bound after k stitched blocks.

    L_0 never enters (the first block's input is exact: the error before it is 0).
    """
    _check(eps, lips)
    b, out = Fraction(0), []
    for e, lip in zip(eps, lips, strict=True):
        b = lip * b + e
        out.append(b)
    return out


def global_bound(eps: Sequence[Fraction], lips: Sequence[Fraction]) -> Fraction:
    """Σ_i ε_i Π_{j>i} L_j, exactly, by the recursion b ← L_i·b + ε_i."""
    bounds = prefix_bounds(eps, lips)
    return bounds[-1] if bounds else Fraction(0)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def round_up(q: Fraction, digits: int) -> Fraction:
    """The least multiple of 10^-digits that is ≥ q."""
    scale = 10**digits if digits >= 0 else Fraction(1, 10**-digits)
    n = q * scale
    return Fraction(_ceil_div(n.numerator, n.denominator)) / scale


def round_down(q: Fraction, digits: int) -> Fraction:
    """The greatest multiple of 10^-digits that is ≤ q."""
    scale = 10**digits if digits >= 0 else Fraction(1, 10**-digits)
    n = q * scale
    return Fraction(n.numerator // n.denominator) / scale


def _decimal_exponent(q: Fraction) -> int:
    """floor(log10(q)) for q > 0, exactly (no float logarithm, which misrounds near powers of 10)."""
    e = len(str(q.numerator)) - len(str(q.denominator))
    while Fraction(10) ** e > q:
        e -= 1
    while Fraction(10) ** (e + 1) <= q:
        e += 1
    return e


def round_up_sig(q: Fraction, sig: int) -> Fraction:
    """The least decimal with at most `sig` significant digits that is ≥ q (q ≥ 0)."""
    if sig < 1:
        raise ValueError("sig must be at least 1")
    if q < 0:
        raise ValueError("round_up_sig expects q ≥ 0")
    if q == 0:
        return q
    return round_up(q, sig - 1 - _decimal_exponent(q))


def decimal_str(q: Fraction) -> str:
    """Exact decimal text of q; q's denominator must have no prime factor but 2 and 5 (e.g. a round_up result)."""
    den, twos, fives = q.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        raise ValueError(f"{q} has no finite decimal expansion; round it first")
    places = max(twos, fives)
    n = abs(q.numerator) * (10**places // q.denominator)
    sign = "-" if q < 0 else ""
    if places == 0:
        return f"{sign}{n}"
    s = str(n).rjust(places + 1, "0")
    return f"{sign}{s[:-places]}.{s[-places:]}"


def float_up(q: Fraction) -> float:
    """The least float ≥ q (inf when q exceeds the float range)."""
    try:
        f = float(q)  # correctly rounded to nearest
    except OverflowError:
        return math.inf
    return f if Fraction(f) >= q else math.nextafter(f, math.inf)


def policy_value(alpha: float) -> Fraction:
    """A policy threshold as the decimal the user chose and the certificate's JSON records (0.9 → 9/10).

    Unlike ε, L or a loss weight, α is not a measurement: it is a decimal whose double (0.9 →
    0.900000000000000022…) is an artefact of storing it. A block covering exactly 18 of 20 tokens meets
    "cov_act ≥ 0.9" against 9/10, as its user means, but not against the double.
    """
    return to_fraction(repr(alpha))  # repr: the shortest decimal that reads back as the same double


def meets(covered: float | int, total: float | int, alpha: float) -> bool:
    """covered ≥ α·total in exact rationals, α as its decimal: the certificate's verdict and the formal
    checker make this one comparison, so they agree even where covered/total is within an ulp of α."""
    if not (math.isfinite(covered) and math.isfinite(total)):
        return False
    return policy_value(alpha) * to_fraction(total) <= to_fraction(covered)


def int_text(n: int) -> str:
    """Decimal digits of any int (str() refuses ints past 4300 digits; Decimal's exact conversion does not)."""
    return format(Decimal(n), "f")
