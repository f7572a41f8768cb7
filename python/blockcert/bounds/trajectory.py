"""The per-block terms of the composition along the float replay, each sound in floating point.

The choice (docs/bounds.md §1): the certified surrogate B̂_i is the real-valued function its (dense) IR
declares. The replay computes some float32 approximation fl B̂_i of it, in whatever summation order the
machine uses. From enclosures of B̂_i at the two exact float32 points x_i (traced) and x̂_i (stitched), per
prompt and token:

    eps_t ≥ ‖B̂_i(x_i)_t − x_{i+1,t}‖             the real surrogate's error at the traced input
    fwd_t ≥ ‖fl B̂_i(x̂_i)_t − B̂_i(x̂_i)_t‖          the replay's forward error at the stitched input
    ratio ≥ dist(B̂_i(x̂_i), B̂_i(x_i)) / dist(x̂_i, x_i)

Both are a-posteriori bounds: ‖y − exact‖ ≤ ‖|y − mid| + rad‖ for a computed y and an enclosure mid ± rad of
the exact value, so they hold for any summation order and thread count of the replay. With the shift
Δ_i = x̂_{i+1} − B̂_i(x̂_i) (‖Δ_{i,t}‖ ≤ fwd_t), the shifted surrogate S_i(y) = B̂_i(y) + Δ_i satisfies the
pointwise hypothesis exactly: S_i(x̂_i) = x̂_{i+1} is the replay's own trajectory; dist(S_i x̂_i, S_i x_i) =
dist(B̂_i x̂_i, B̂_i x_i) (a shift cancels in any translation-invariant distance), so any L_i that bounds B̂_i's
ratio or Lipschitz constant bounds S_i's; and dist(S_i(x_i), x_{i+1}) ≤ max_t (eps_t + fwd_t) =: ε_i.

The terms need nothing of the block but its enclosure (pointwise.run_block_enclosed), which encloses every op
and IR feature the interpreter has (sliding windows, q/k and sandwich norms, (1 + w) gains, ...): so they are
sound for every family the interpreter replays. Whatever the float32 replay rounds that the real function does
not (Gemma's float32 1 + w, the float32 score scale, float32 softmax) is inside fwd_t by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockcert.bounds.pointwise import (
    _NUDGE,
    Enclosure,
    distance_lower,
    distance_upper,
    run_block_enclosed,
    token_distance_upper,
)
from blockcert.core.ir import BlockIR

F64 = torch.float64


@dataclass(frozen=True)
class TrajectoryTerms:
    eps_tok: torch.Tensor  # [P, T] ≥ ‖B̂(x)_t − x_{i+1,t}‖ (0 at padding)
    fwd_tok: torch.Tensor  # [P, T] ≥ ‖x̂_{i+1,t} − B̂(x̂)_t‖, the replay's forward error
    ratio: torch.Tensor  # [P] ≥ dist(B̂(x̂), B̂(x)) / dist(x̂, x); 0 where x̂ = x (every L then holds)

    def epsilon(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per prompt [P], ε = max_t w_t(eps_t + fwd_t) ≥ the weighted distance of S(x) from x_{i+1}, rounded up
        past its three roundings (the sum, the product, nothing else) by _NUDGE."""
        tok = self.eps_tok + self.fwd_tok
        if weights is not None:
            tok = tok * weights.to(F64)
        return tok.amax(-1) * _NUDGE


def trajectory_terms(ir: BlockIR, x: torch.Tensor, x_hat: torch.Tensor, x_next: torch.Tensor,
                     y_hat: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> TrajectoryTerms:
    """The terms above for one block ([P, T, d] float32 tensors: traced input and output, stitched input and the
    replay's output at it)."""
    b = run_block_enclosed(ir, Enclosure.point(x), valid, positions)
    a = b if torch.equal(x_hat, x) else run_block_enclosed(ir, Enclosure.point(x_hat), valid, positions)
    eps_tok = token_distance_upper(b, Enclosure.point(x_next), valid)
    fwd_tok = token_distance_upper(a, Enclosure.point(y_hat), valid)
    den = distance_lower(x_hat, x, valid)
    num = distance_upper(a, b, valid)
    ratio = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)) * _NUDGE,
                        torch.zeros_like(den))
    return TrajectoryTerms(eps_tok, fwd_tok, ratio)
