"""Ranges of the MLP activations and their derivatives over intervals (vectorised, float64).

Each supported activation φ has the same shape (checked on a dense grid by the tests):
  φ   decreases on (−∞, a] and increases on [a, ∞)                       (a: φ's minimiser; relu: a = 0)
  φ'  decreases on (−∞, −c], increases on [−c, c'], decreases on [c', ∞) (smooth ones; relu: φ' ∈ {0, 1})
so the range over [lo, hi] is spanned by the endpoints and whichever critical points lie inside. The
critical points are found once by bisection on a sign change in float64; being stationary points, an
error δ in their location changes the value there by O(δ²). Every range is widened by
`_SLACK·(1 + |x| + |value|)` at each point x it was evaluated at, to cover the float64 evaluation itself:
torch's float64 sigmoid / erf / tanh / exp are accurate to a few ulp, and the products and sums around
them (x·σ(x), 1 + erf(x/√2), ...) add errors of a few ulp of |x| and of the value. An absolute slack alone
is not enough: at |x| ≈ 9·10³ one ulp of x is already 1.8e-12.

The real function of "gelu_pytorch_tanh" (Gemma 3's gated MLP, GPT-2's "gelu_new" is the same formula) is
0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) with the exact constants; torch uses their float64 roundings,
which moves φ by at most ~0.25·u·|x| (|∂φ/∂β·β| ≤ 0.5|x|·max_z z·sech²z ≤ 0.25|x| for the √(2/π) factor β,
less for 0.044715): inside the slack. The shape above holds for it too (tests/test_bounds.py on a grid,
tests/test_bounds_families.py against mpmath around its minimiser a ≈ −0.75 and in the tails).
"""

from __future__ import annotations

import math
from functools import cache

import torch

from blockcert.core.interpreter import activation as act

_SLACK = 1e-12  # widening per unit of (1 + |x| + |value|): ≥ 4500 ulps, against a float64 error of a few ulps
_SQRT_2_OVER_PI = 0.7978845608028654


def act_prime(name: str, x: torch.Tensor) -> torch.Tensor:
    """φ'(x) in closed form (relu: the right derivative, 1 for x > 0, else 0)."""
    if name == "silu":
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))
    if name == "gelu":
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
        return cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
        t = torch.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    if name == "relu":
        return (x > 0).to(x.dtype)
    raise ValueError(f"unsupported activation {name!r}")


def _bisect(f, lo: float, hi: float) -> float:
    flo = f(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        fm = f(mid)
        if mid in (lo, hi):
            break
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _scalar(fn, name: str):
    return lambda v: float(fn(name, torch.tensor(v, dtype=torch.float64)))


@cache
def critical_points(name: str) -> tuple[float, float, float]:
    """(a, −c, c'): φ's minimiser and φ' 's minimiser and maximiser (relu: all 0)."""
    if name == "relu":
        return (0.0, 0.0, 0.0)
    d1 = _scalar(act_prime, name)
    h = 1e-6

    def d2(v: float) -> float:  # only its sign matters, and only away from the root
        return (d1(v + h) - d1(v - h)) / (2 * h)

    a = _bisect(d1, -4.0, 0.0)  # φ'(a) = 0: φ' < 0 left of a, > 0 right of it
    neg_c = _bisect(d2, -6.0, -0.5)
    pos_c = _bisect(d2, 0.5, 6.0)
    return (a, neg_c, pos_c)


def outward(mid: torch.Tensor, rad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] ⊇ [mid − rad, mid + rad] exactly: fl(mid ± rad) is within half an ulp of the exact value and
    may round inward, so each endpoint steps one float outward (at |x| ≈ 1e4 an ulp is 1.8e-12)."""
    inf = torch.tensor(math.inf, dtype=mid.dtype)
    return torch.nextafter(mid - rad, -inf), torch.nextafter(mid + rad, inf)


def _widen(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _SLACK * (1 + x.abs() + v.abs())


def _range_with_criticals(fn, name: str, lo: torch.Tensor, hi: torch.Tensor, crits: tuple[float, ...]):
    """[min, max] of fn over [lo, hi] (lo, hi exact floats), each candidate value widened by its own slack."""
    v_lo, v_hi = fn(name, lo), fn(name, hi)
    w_lo, w_hi = _widen(lo, v_lo), _widen(hi, v_hi)
    low, high = torch.minimum(v_lo - w_lo, v_hi - w_hi), torch.maximum(v_lo + w_lo, v_hi + w_hi)
    for c in crits:
        inside = (lo <= c) & (c <= hi)
        vc = float(fn(name, torch.tensor(c, dtype=torch.float64)))
        wc = _SLACK * (1 + abs(c) + abs(vc))
        low = torch.where(inside, torch.clamp(low, max=vc - wc), low)
        high = torch.where(inside, torch.clamp(high, min=vc + wc), high)
    return low, high


def act_range(name: str, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise [min, max] of φ over [lo, hi]."""
    return _range_with_criticals(act, name, lo, hi, critical_points(name)[:1])


def act_prime_range(name: str, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise [min, max] of φ' over [lo, hi] (relu: the Clarke range [0, 1] when 0 is inside)."""
    if name == "relu":
        low = (lo > 0).to(lo.dtype)
        high = (hi > 0).to(hi.dtype)
        return low, high
    return _range_with_criticals(act_prime, name, lo, hi, critical_points(name)[1:])


@cache
def act_prime_sup(name: str) -> float:
    """sup_x |φ'(x)|: the global Lipschitz constant of φ (from the critical points and the limits 0 and 1)."""
    if name == "relu":
        return 1.0
    _, neg_c, pos_c = critical_points(name)
    d1 = _scalar(act_prime, name)
    return max(abs(d1(neg_c)), abs(d1(pos_c)), 1.0) + _SLACK
