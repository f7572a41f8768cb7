"""Rigorous float64 enclosures: midpoint–radius intervals with outward rounding margins.

Every proof quantity is computed in float64 from the float32 weights (which float64 holds exactly).
An `IV` holds `mid` and `rad` tensors with the invariant: the exact real value lies in
[mid − rad, mid + rad]. The derivation, with u = 2⁻⁵³ (unit roundoff, round-to-nearest):

* One correctly rounded IEEE operation (+, −, ×, /, sqrt) has |fl(r) − r| ≤ u·|fl(r)|/(1 − u) ≤ 2u·|fl(r)|.
* A dot product of length n, in any summation order, with or without FMA (BLAS dgemm; no Strassen-type
  algorithm is used for CPU dgemm) satisfies |fl(x·y) − x·y| ≤ γ_n·(|x|·|y|), γ_n = n·u/(1 − n·u)
  (Higham, Accuracy and Stability of Numerical Algorithms, §3.1).
* Radii are themselves computed in floating point from non-negative terms with at most a few hundred
  roundings; each rounding shrinks a non-negative sum by at most a factor (1 − u), so multiplying the
  computed radius by INFLATE = 1 + 2⁻⁴⁰ (≫ (1 − u)⁻³⁰⁰) makes it an upper bound. ETA = 2⁻⁹⁰⁰ is added
  to every radius to cover underflow (absolute error ≤ 2⁻¹⁰⁷⁴ per operation).
* exp: torch's float64 exp is accurate to a few ulp; we assume relative error ≤ 2⁻⁴⁰ (≈ 9e-13, about
  8000 ulp) and widen by that factor on both sides.
* `down(x)` / `up(x)`: after one correctly rounded operation on exact inputs, the next float towards −∞
  (+∞) is a lower (upper) bound of the exact result (the rounding error is at most half an ulp, also at
  a binade boundary). Scalar post-processing in the proofs uses only such single steps on bounds, with
  operations that are monotone in the bounded arguments.

Assumptions stated plainly: IEEE binary64 round-to-nearest, no overflow (all values here are < 1e6),
the exp accuracy above. Within those, every `lower()`/`upper()` is a true bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

U = 2.0**-53
INFLATE = 1.0 + 2.0**-40
EXP_REL = 2.0**-40
ETA = 2.0**-900
F64 = torch.float64


def down(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, -math.inf))


def up(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, math.inf))


def _gamma(n: int) -> float:
    return n * U / (1.0 - n * U)


def _fix(rad: torch.Tensor) -> torch.Tensor:
    return rad * INFLATE + ETA


@dataclass(frozen=True)
class IV:
    mid: torch.Tensor
    rad: torch.Tensor

    @staticmethod
    def exact(x: torch.Tensor) -> IV:
        m = x.to(F64)
        return IV(m, torch.zeros_like(m))

    @staticmethod
    def from_bounds(lo: torch.Tensor, hi: torch.Tensor) -> IV:
        mid = (lo + hi) * 0.5
        rad = torch.maximum(hi - mid, mid - lo) + 2 * U * (lo.abs() + hi.abs())
        return IV(mid, _fix(rad))

    def lower(self) -> torch.Tensor:
        return down(self.mid - self.rad)

    def upper(self) -> torch.Tensor:
        return up(self.mid + self.rad)

    def __add__(self, o: IV) -> IV:
        mid = self.mid + o.mid
        return IV(mid, _fix(self.rad + o.rad + 2 * U * mid.abs()))

    def __sub__(self, o: IV) -> IV:
        mid = self.mid - o.mid
        return IV(mid, _fix(self.rad + o.rad + 2 * U * mid.abs()))

    def __getitem__(self, idx) -> IV:
        return IV(self.mid[idx], self.rad[idx])

    @property
    def T(self) -> IV:
        return IV(self.mid.T, self.rad.T)

    def unsqueeze(self, dim: int) -> IV:
        return IV(self.mid.unsqueeze(dim), self.rad.unsqueeze(dim))

    def mul(self, o: IV) -> IV:
        """Elementwise (broadcasting) product."""
        mid = self.mid * o.mid
        rad = self.mid.abs() * o.rad + self.rad * o.mid.abs() + self.rad * o.rad + 2 * U * mid.abs()
        return IV(mid, _fix(rad))

    def __matmul__(self, o: IV) -> IV:
        n = self.mid.shape[-1]
        mid = self.mid @ o.mid
        am, bm = self.mid.abs(), o.mid.abs()
        rad = am @ o.rad + self.rad @ bm + self.rad @ o.rad + _gamma(n) * (am @ bm)
        return IV(mid, _fix(rad))

    def exp_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rigorous (lo, hi) of exp over the interval (exp is monotone)."""
        return torch.exp(self.lower()) * (1 - EXP_REL), torch.exp(self.upper()) * (1 + EXP_REL)


def inv_sqrt(n: int) -> IV:
    """1/sqrt(n): two correctly rounded operations, so within 4u relative of the computed value."""
    c = torch.tensor(1.0 / math.sqrt(n), dtype=F64)
    return IV(c, _fix(4 * U * c))


def sum_lower(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A lower bound of the exact sum of non-negative lower bounds (summation shrinks by ≤ (1−u)^n)."""
    n = x.shape[dim]
    return x.sum(dim) * (1 - (n + 2) * 2 * U)


def sum_upper(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    return x.sum(dim) * (1 + (n + 2) * 2 * U) + ETA


def cumsum_lower(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    return x.cumsum(dim) * (1 - (n + 2) * 2 * U)


def cumsum_upper(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    return x.cumsum(dim) * (1 + (n + 2) * 2 * U) + ETA
