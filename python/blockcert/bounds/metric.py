"""Per-layer distances for the frontier kind `metric` (docs/bounds.md §8⅞).

The composition theorem allows one distance per layer: if d_{i+1}(S_i x̂_i, S_i x_i) ≤ L_i·d_i(x̂_i, x_i) and
d_{i+1}(S_i x_i, x_{i+1}) ≤ ε_i, then d_L(x̂_L, x_L) ≤ Σ_i ε_i Π_{j>i} L_j, and only d_L has to be the distance
the user reads (here the max-token L2 distance). The intermediate distances used are per-token weighted,

    d_i(X, Y) = max_t w_{i,t}·‖X_t − Y_t‖₂,     w_{i,t} = 1 / max(‖x_{i,t}‖, m_i)  (i < L),   w_{L,t} = 1,

fitted on the certification traces x_i (m_i: the prompt's median token norm): a large token's error is
measured relative to its own residual norm, which is what every norm layer divides by (an attention-sink
token of norm 2.5e4 then counts like a typical token, instead of dominating the max-token distance).
Per-dimension weights are not used (the norm layers'
r(y) = ‖y‖/√d is not equivariant under them).
A weighted max of norms is a norm, so the mean-value inequality on a convex set applies unchanged.
"""

from __future__ import annotations

import torch

F64 = torch.float64
def token_weights(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[P, T] weights w_t = 1/max(‖x_t‖, median_s ‖x_s‖) of the traced stream x [P, T, d] (1 at padding).

    Tokens above the prompt's median norm are measured relative to their own norm; the others all relative to
    the median (a small-norm token's norm layer is steep, and a weight 1/‖x_t‖ would let its error grow
    unchecked by the ball)."""
    norms = torch.where(valid, x.to(F64).norm(dim=-1), torch.zeros((), dtype=F64))
    med = torch.stack([n[v].median() for n, v in zip(norms, valid, strict=True)])[:, None].clamp_min(1e-300)
    return torch.where(valid, 1.0 / torch.maximum(norms, med), torch.ones((), dtype=F64))


def weighted_distance(tok: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per prompt, max_t w_t·tok_t ([P]) for per-token distances tok [P, T] (measured, not a bound)."""
    return (tok.to(F64) * weights).amax(-1)
