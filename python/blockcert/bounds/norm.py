"""The unit-gain normalisation n(y) of RMSNorm / LayerNorm, on a ball bounded away from zero.

RMSNorm:   n(y) = y / r(y),        r(y) = sqrt(‖y‖²/d + eps)
LayerNorm: n(y) = Py / r(Py),      P = I − 11ᵀ/d (centering, an orthogonal projection)
(the gain and bias are folded into the next linear map, weights.py).

Jacobian (RMS): J = (I − y yᵀ/(d r²)) / r. The bracket has eigenvalues 1 (on y^⊥) and
d·eps/(‖y‖² + d·eps) ∈ (0, 1] (along y), so ‖J‖₂ = 1/r(y) exactly; LayerNorm is the same composed with
P (‖P‖ = 1). On the ball ‖y − x‖ ≤ ρ the radial part ‖y‖ (or ‖Py‖) is ≥ ‖x‖ − ρ, so
    sup_ball ‖J‖ ≤ κ := 1 / sqrt(max(‖x‖ − ρ, 0)²/d + eps)
and, by the mean-value inequality on the (convex) ball, ‖n(y) − n(x)‖ ≤ ρ·κ. Also ‖n(y)‖ < √d always,
so ‖n(y) − n(x)‖ ≤ 2√d: η := min(ρκ, 2√d). When ρ ≥ ‖x‖ only eps keeps κ finite (κ = 1/√eps).
"""

from __future__ import annotations

import math

import torch

from blockcert.bounds.spectral import gamma
from blockcert.bounds.weights import NormParams


def radial(kind: str, x: torch.Tensor) -> torch.Tensor:
    """‖x‖ (RMS) or ‖x − mean(x)‖ (LayerNorm), per token: the quantity a norm layer divides by."""
    if kind == "layer":
        x = x - x.mean(dim=-1, keepdim=True)
    return x.norm(dim=-1)


def normalise(p: NormParams, x: torch.Tensor) -> torch.Tensor:
    """n(x), without gain or bias, in x's dtype."""
    if p.kind == "layer":
        x = x - x.mean(dim=-1, keepdim=True)
    d = x.shape[-1]
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) / d + p.eps)


def kappa(p: NormParams, rad: torch.Tensor, rho: torch.Tensor, d: int) -> torch.Tensor:
    """sup of ‖J_n‖₂ over the ball of radius ρ around a point whose radial part is `rad`."""
    floor = torch.clamp(rad - rho, min=0.0)
    return 1.0 / torch.sqrt(floor * floor / d + p.eps)


def eta(kap: torch.Tensor, rho: torch.Tensor, d: int) -> torch.Tensor:
    """A bound on ‖n(y) − n(x)‖ over the ball: min(ρ·κ, 2√d)."""
    return torch.clamp(rho * kap, max=2.0 * math.sqrt(d))


def kappa_global(p: NormParams) -> float:
    """sup over all inputs of ‖J_n‖₂ = 1/√eps (r ≥ √eps everywhere)."""
    return 1.0 / math.sqrt(p.eps)


def rounding(p: NormParams, d: int) -> float:
    """A bound on ‖fl(n(x)) − n(x)‖ for the float64 `normalise` above: each element is within
    (γ_{d+6} + 1e-12)|n_j| of the exact one (a d-term sum of squares, a division, an add, a sqrt assumed
    accurate to 1e-12 relative, a division; LayerNorm's centring adds one more d-term sum), and ‖n‖ < √d.
    Added to η, it makes the ball around the computed center contain the exact normalised inputs."""
    from_sum = float(gamma(2 * d + 8))
    return (from_sum + 1e-12) * (1 + 1e-12) * math.sqrt(d) * (1 + 1e-12)
