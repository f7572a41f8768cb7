"""The MLP sublayer after its norm layer: a bound on its Jacobian per token, over a ball around each traced
mid-block residual (local), or over all inputs (global).

With n = n(z) the unit-gain normalisation and the gain folded in (weights.py), the gated MLP is
W_d(φ(W_g n + b_g) ⊙ (W_u n + b_u)) and its Jacobian in n is

    K = W_d (diag(α) W_g + diag(β) W_u),   α = φ'(g) ⊙ u,  β = φ(g)        (plain MLP: K = W_d diag(φ'(g)) W_u)

so ‖J‖ ≤ κ·‖K‖ with κ the norm layer's bound (norm.py). On the ball, g and u stay in the intervals
g_c ± η‖W_g[j,:]‖ (η bounds the move of n), which give boxes for α and β (activations.py). Over a box
with center c and half-widths h, K = K(c) + W_d(diag(δ_α)W_g + diag(δ_β)W_u) with |δ| ≤ h, and

    ‖W_d diag(δ) W‖ ≤ ‖W_d diag(√h)‖·‖diag(√h) W‖                       (split through the diagonal)

(stacked over the gate and up halves). ‖K(c)‖ is computed per token (Gram iteration, with its rounding
allowance) for the tokens that can set the block's maximum, the others keeping a cheap Frobenius bound;
the radius part is one envelope per prompt, refined per token for the token that sets the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch

from blockcert.bounds.activations import act_prime_range, act_range, outward
from blockcert.bounds.norm import kappa_global
from blockcert.bounds.spectral import gamma, grow, scaled_spectral_upper, spectral_upper_many
from blockcert.bounds.weights import F64, PreparedBlock
from blockcert.core.exact import float_up

CHUNK = 16  # tokens whose center Jacobians are formed and bounded at once (memory: CHUNK·m·d floats)
_TWO_U = 2.0**-52


@dataclass(frozen=True)
class CoefBox:
    """Per token, the range of the diagonal coefficients of K: α (and β for gated MLPs), stacked [N, k]."""

    lo: torch.Tensor
    hi: torch.Tensor

    @property
    def mid(self) -> torch.Tensor:
        return 0.5 * (self.lo + self.hi)

    @property
    def half(self) -> torch.Tensor:
        # mid ± half must cover [lo, hi] although mid = fl((lo + hi)/2) is off by ≤ u|mid| and fl(hi − lo)
        # rounds: half = (fl(hi − lo)/2 + 2u|mid|)·(1 + 8u) ≥ (hi − lo)/2 + u|mid|/(1 − u) (4 roundings on
        # nonnegative values). A purely relative widening fails for a box narrow next to its center.
        return (0.5 * (self.hi - self.lo) + _TWO_U * self.mid.abs()) * grow(4) + 1e-300


def _row_norms(w: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((w * w).sum(1)) * grow(w.shape[1] + 2)  # float64 row norms, rounded up past their rounding


def _mul_range(alo, ahi, blo, bhi):
    c = torch.stack([alo * blo, alo * bhi, ahi * blo, ahi * bhi])
    return c.amin(0), c.amax(0)


def coef_box(prep: PreparedBlock, g_c: torch.Tensor, g_rad: torch.Tensor,
             u_c: torch.Tensor, u_rad: torch.Tensor) -> CoefBox:
    """Boxes of α (and β) from the pre-activation intervals g_c ± g_rad, u_c ± u_rad ([N, m])."""
    name = prep.activation
    u_lo, u_hi = outward(u_c, u_rad)  # fl(c ± r) may round inward: step one float outward
    if prep.mlp_kind == "plain":  # coefficient φ'(u) of W_u
        lo, hi = act_prime_range(name, u_lo, u_hi)
        return CoefBox(lo, hi)
    g_lo, g_hi = outward(g_c, g_rad)
    dlo, dhi = act_prime_range(name, g_lo, g_hi)
    alo, ahi = _mul_range(dlo, dhi, u_lo, u_hi)
    blo, bhi = act_range(name, g_lo, g_hi)
    # Product intervals are computed in float64: one rounding per product (≤ u = 1.1e-16 relative), covered by
    # a relative 1e-12 (a bounded count: the margin exceeds the one rounding 9000-fold).
    w = 1e-12 * torch.maximum(alo.abs(), ahi.abs())
    return CoefBox(torch.cat([alo - w, blo], -1), torch.cat([ahi + w, bhi], -1))


def _pre_activation(n2: torch.Tensor, eta2: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                    b_rad: torch.Tensor | None = None):
    """Center and radius of W n + b* over ‖n − n2‖ ≤ η: the move η‖W[j,:]‖, the float64 rounding of the
    center itself, γ_{d+1}(|n2|·|W|ᵀ + |b|) (Higham Thm 3.1), and the folded bias's own radius |b* − b| ≤ b_rad
    (weights.py), so the exact pre-activation of every n in the ball lies in c ± rad although
    c = fl(n2·Wᵀ + b) is not exact. The radius is a sum of nonnegative terms ≤ d + 6 roundings deep (the
    (d+1)-term absolute sum, the γ product, the bias radius, η‖row‖ and the sum): grow(d + 10)."""
    c = n2 @ w.T + b
    err = float(gamma(w.shape[1] + 1)) * (1 + 1e-12) * (n2.abs() @ w.abs().T + b.abs())
    if b_rad is not None:
        err = err + b_rad
    rad = (eta2[:, None] * _row_norms(w)[None, :] + err) * grow(w.shape[1] + 10)
    return c, rad


def local_boxes(prep: PreparedBlock, n2: torch.Tensor, eta2: torch.Tensor) -> CoefBox:
    """Coefficient boxes for tokens whose normalised input lies within eta2 [N] of n2 [N, d]."""
    u_c, u_rad = _pre_activation(n2, eta2, prep.wu, prep.bu, prep.bu_rad)
    if prep.mlp_kind == "plain":
        return coef_box(prep, u_c, u_rad, u_c, u_rad)
    g_c, g_rad = _pre_activation(n2, eta2, prep.wg, prep.bg, prep.bg_rad)
    return coef_box(prep, g_c, g_rad, u_c, u_rad)


def global_box(prep: PreparedBlock) -> CoefBox:
    """Coefficient box over all inputs: ‖n‖ < √d, so each pre-activation is within √d·‖row‖ of its bias."""
    rd = math.sqrt(prep.d)
    u_rad = ((rd * _row_norms(prep.wu) + prep.bu_rad) * grow(3))[None]
    if prep.mlp_kind == "plain":
        return coef_box(prep, prep.bu[None], u_rad, prep.bu[None], u_rad)
    g_rad = ((rd * _row_norms(prep.wg) + prep.bg_rad) * grow(3))[None]
    return coef_box(prep, prep.bg[None], g_rad, prep.bu[None], u_rad)


def _right(prep: PreparedBlock) -> torch.Tensor:
    """The stacked right factor: W_u (plain) or [W_g; W_u] (gated), [k, d]."""
    return prep.wu if prep.mlp_kind == "plain" else torch.cat([prep.wg, prep.wu], 0)


def _left(prep: PreparedBlock) -> torch.Tensor:
    return prep.wd if prep.mlp_kind == "plain" else torch.cat([prep.wd, prep.wd], 1)


def split_bound(prep: PreparedBlock, h: torch.Tensor) -> float:
    """sup over |δ| ≤ h of ‖W_left diag(δ) W_right‖ ≤ ‖W_left diag(√h)‖·‖diag(√h) W_right‖ (h: [k])."""
    s = torch.sqrt(h) * (1 + 1e-15)  # s² ≥ h despite the rounding of sqrt
    return float_up(Fraction(scaled_spectral_upper(_left(prep), col_scale=s))
                    * Fraction(scaled_spectral_upper(_right(prep), row_scale=s)))


def _center_matrices(prep: PreparedBlock, mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K(c) = W_d·N(c) for a chunk of tokens [B, d, d], and the bound on its float64 forming error [B]."""
    m = prep.wd.shape[1]
    if prep.mlp_kind == "plain":
        n = mid[:, :, None] * prep.wu[None]
        abs_n_sq = (mid * mid) @ (prep.wu * prep.wu).sum(1)
    else:
        a, b = mid[:, :m], mid[:, m:]
        n = a[:, :, None] * prep.wg[None] + b[:, :, None] * prep.wu[None]
        gg, uu = (prep.wg * prep.wg).sum(1), (prep.wu * prep.wu).sum(1)
        gu = (prep.wg.abs() * prep.wu.abs()).sum(1)
        abs_n_sq = (a * a) @ gg + 2 * (a * b).abs() @ gu + (b * b) @ uu  # ‖ |α||W_g| + |β||W_u| ‖_F²
    k = prep.wd[None] @ n
    # Forming N adds ≤ 3 roundings per entry and the product γ_m: |fl(K) − K| ≤ γ_{m+3}|W_d|·(|α||W_g| + |β||W_u|),
    # in spectral norm ≤ γ_{m+3}‖W_d‖_F‖ |α||W_g| + |β||W_u| ‖_F. The last factor is a sum over m of d-term sums
    # (≤ m + d + 4 roundings on any path, halved by the square root), the rest 3 products: grow(m + d + 8).
    err = float(gamma(m + 3)) * (1 + 1e-12) * prep.wd_frob * torch.sqrt(abs_n_sq) * grow(m + prep.d + 8)
    return k, err


def _frobenius_upper(prep: PreparedBlock, mid: torch.Tensor) -> torch.Tensor:
    """Rigorous ‖K(c_t)‖_F ≥ ‖K(c_t)‖₂ for every token at once, without forming any K ([N]).

    ‖W_d N‖_F² = Σ_jk (W_dᵀW_d)_jk (N Nᵀ)_jk = cᵀ H c with H = (W_dᵀW_d) ∘ (R Rᵀ) over the stacked right factor
    R and coefficients c. Every rounding in it is at most γ_n (n ≤ 4k² + d + 2 terms) times the same
    form in absolute values, which is added.
    """
    right, left = _right(prep), _left(prep)
    h = (left.T @ left) * (right @ right.T)
    h_abs = (left.abs().T @ left.abs()) * (right.abs() @ right.abs().T)
    q = ((mid @ h) * mid).sum(-1)
    q_abs = ((mid.abs() @ h_abs) * mid.abs()).sum(-1)
    n = 4 * mid.shape[1] ** 2 + prep.d + 2
    return torch.sqrt(torch.clamp(q, min=0.0) + float(gamma(n)) * 2 * q_abs) * (1 + 1e-12)


def center_norms(
    prep: PreparedBlock,
    mid: torch.Tensor,  # [N, k] box centers
    value_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, int]:
    """Rigorous upper bounds of ‖K(c_t)‖₂ per token [N], and how many tokens were bounded by Gram iteration.

    `value_of(idx, norm_bounds)` is the caller's figure of merit for tokens idx (monotone in the bound);
    only the maximum over tokens matters to it. Tokens are refined in decreasing order of their cheap
    Frobenius bound until no remaining token can raise the maximum; the others keep the Frobenius bound,
    refinement of a token stops once it cannot either. Every returned value is a rigorous upper bound.
    """
    out = _frobenius_upper(prep, mid)
    order = torch.argsort(value_of(torch.arange(mid.shape[0]), out), descending=True)
    best = torch.tensor(-math.inf, dtype=F64)
    refined = 0
    for lo in range(0, len(order), CHUNK):
        chunk = order[lo : lo + CHUNK]
        live = chunk[value_of(chunk, out[chunk]) > best]
        if live.numel() == 0:
            break  # sorted: no later token can raise the maximum either
        k, err = _center_matrices(prep, mid[live])

        def enough(idx, up, low, live=live, err=err):
            nonlocal best
            best = torch.maximum(best, value_of(live[idx], low).max())
            return value_of(live[idx], up + err[idx]) <= best

        up, _ = spectral_upper_many(k, rtol=1e-3, enough=enough)
        out[live] = torch.minimum(out[live], (up + err) * grow(1))
        refined += live.numel()
    return out, refined


def mlp_bound_global(prep: PreparedBlock) -> float:
    """sup over all inputs of ‖J_mlp∘norm‖: κ = 1/√eps times the box bound (center + split, or split alone)."""
    box = global_box(prep)
    k, err = _center_matrices(prep, box.mid)
    up, _ = spectral_upper_many(k)
    via_center = Fraction(float(up[0])) + Fraction(float(err[0])) + Fraction(split_bound(prep, box.half[0]))
    magnitude = split_bound(prep, torch.maximum(box.lo.abs(), box.hi.abs())[0])
    # κ = 1/√eps is two roundings from the exact value: grow(2).
    return float_up(Fraction(kappa_global(prep.norm2)) * Fraction(grow(2)) * min(via_center, Fraction(magnitude)))
