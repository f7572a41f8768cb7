"""A whole residual block: Y ↦ Z = Y + Attn(N1(Y)) ↦ Z + MLP(N2(Z)), in the max-token distance.

The Jacobian factors as J = (I + J_mlp(Z))(I + J_attn(Y)) with J_mlp block-diagonal over tokens, so for a
direction with ‖δ_s‖ ≤ 1, (Jδ)_t = (I + J_mlp,tt)(δ_t + (J_attn δ)_t) and

    ‖(Jδ)_t‖ ≤ (1 + m_t)(1 + a_t),      L = max_t (1 + m_t)(1 + a_t)

with a_t the attention bound of query t (attention.py) over the input set and m_t the MLP bound of token
t (mlp.py) over a ball containing every mid-block residual Z_t(Y) the input set can produce.

The input set is a union of boxes Π_t B(c_t, r_t) (per-token balls). For the theorem's pointwise step it
must contain the segment [x_i, x̂_i] between the traced and the stitched input: the mean-value inequality
along that segment then gives dist(B̂(x̂_i), B̂(x_i)) ≤ L·dist(x̂_i, x_i). Covering the segment by K boxes
centred on its pieces keeps every box small (radius ‖x̂_t − x_t‖/2K), which is what keeps the softmax
and norm-layer terms close to their values at a point. With a fixed radius ρ the set is instead the single
max-token ball of radius ρ around x_i.

Rounding (issue 18): the constant is an upper bound by construction, with no relative margin. The boxes cover
the segment exactly (the float64 rounding of their centers is added to their radii); every center quantity
is an enclosure (attention.py, mlp.py) or carries its rounding into the set radii (the norm outputs through
η, the mid-block residual through the MLP ball's radius); κ is computed from a rigorous lower bound of the
radial part; and every value assembled from these upper bounds by monotone float64 operations is rounded up
by `grow` with the number of roundings on its longest path counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockcert.bounds.attention import (
    AttentionGeometry,
    attention_bound,
    attention_bound_global,
    attention_center,
    attention_displacement,
)
from blockcert.bounds.mlp import center_norms, local_boxes, mlp_bound_global, split_bound
from blockcert.bounds.norm import eta, kappa, normalise
from blockcert.bounds.norm import rounding as norm_rounding
from blockcert.bounds.spectral import gamma_up, grow, shrink
from blockcert.bounds.weights import F64, NormParams, PreparedBlock

_U = 2.0**-53


@dataclass(frozen=True)
class Neighbourhood:
    """One prompt's input set: the union over pieces k of the boxes ‖Y_t − centers[k]_t‖ ≤ radii[k]_t."""

    x: torch.Tensor  # [T, d] traced input (valid tokens only); the MLP ball is centred on its mid-block value
    centers: tuple[torch.Tensor, ...]  # [T, d] each
    radii: tuple[torch.Tensor, ...]  # [T] each
    positions: torch.Tensor  # [T] rotary positions
    # Per-token weights of the distances (metric.py): the input distance max_s w_in_s‖δ_s‖ (as the
    # direction bound μ_s = 1/w_in_s) and the output distance max_t w_out_t‖·‖. None: all ones, the
    # max-token distance on both sides.
    mu: torch.Tensor | None = None  # [T]
    w_out: torch.Tensor | None = None  # [T]


def segment_cover(x: torch.Tensor, x_hat: torch.Tensor, positions: torch.Tensor, pieces: int) -> Neighbourhood:
    """K boxes covering the segment [x, x̂] exactly: centers at the midpoints of K equal pieces, radius
    ‖x̂_t − x_t‖/2K plus the float64 rounding of the centers.

    With D = x̂ − x exact and D̂ = fl(D), ŝ = fl((2j+1)/2K), ĉ = fl(x + fl(ŝ·D̂)): |ĉ − (x + sD)| ≤ u|ĉ| + 4u|D̂|
    elementwise (one rounding each for D̂, ŝ, the product and the sum; s ≤ 1), and 0 where D̂ = 0 (then ĉ = x
    exactly). A point x + τD of piece j is within ‖D_t‖/2K of the exact center, so within that plus the center's
    error of ĉ; ‖D_t‖ ≤ (1 + u)‖D̂_t‖ and ‖D̂_t‖ is computed with ≤ d + 1 roundings.
    """
    x64, xh64 = _f64(x), _f64(x_hat)
    diff = xh64 - x64
    d = diff.shape[-1]
    dev = torch.sqrt((diff * diff).sum(-1))
    k = pieces if bool((dev > 0).any()) else 1
    moved = diff != 0
    zero = torch.zeros((), dtype=F64)
    centers, radii = [], []
    for j in range(k):
        c = x64 + ((2 * j + 1) / (2 * k)) * diff
        err = torch.where(moved, _U * c.abs() + 4 * _U * diff.abs(), zero)
        centers.append(c)
        radii.append((dev / (2 * k) * grow(d + 4) + torch.sqrt((err * err).sum(-1)) * grow(d + 8)) * grow(1))
    return Neighbourhood(x64, tuple(centers), tuple(radii), positions)


def ball(x: torch.Tensor, radius: float, positions: torch.Tensor) -> Neighbourhood:
    """The max-token ball of radius ρ around x."""
    x64 = _f64(x)
    return Neighbourhood(x64, (x64,), (torch.full((x.shape[0],), float(radius), dtype=F64),), positions)


def weighted_ball(x: torch.Tensor, radius: float, w_in: torch.Tensor, w_out: torch.Tensor,
                  positions: torch.Tensor) -> Neighbourhood:
    """The ball {Y : max_t w_in_t‖Y_t − x_t‖ ≤ ρ} (per-token radii ρ/w_in_t, rounded up), with the operator norm
    taken from the distance weighted by w_in to the one weighted by w_out (μ_t ≥ 1/w_in_t, rounded up)."""
    x64 = _f64(x)
    w_in, w_out = _f64(w_in), _f64(w_out)
    radii = float(radius) / w_in * grow(1)  # one division, then grow's own product
    return Neighbourhood(x64, (x64,), (radii,), positions, mu=(1 / w_in) * grow(1), w_out=w_out)


@dataclass(frozen=True)
class LocalBound:
    lipschitz: float  # max over tokens and prompts of (1 + m_t)(1 + a_t)
    k_attn: float  # max a_t
    k_mlp: float  # max m_t
    per_token: tuple[torch.Tensor, ...]  # per prompt [T] bound of token t (an upper bound for every token)
    zero_norm: bool  # some ball reached a point where a norm layer's input can vanish (κ from eps alone)
    tokens_exact: int  # tokens whose MLP center norm was bounded by Gram iteration (others: Frobenius bound)


@dataclass(frozen=True)
class GlobalBound:
    lipschitz: float
    k_attn: float
    k_mlp: float


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(device="cpu", dtype=F64)


def radial_lower(kind: str, x: torch.Tensor) -> torch.Tensor:
    """≤ the exact ‖x_t‖ (RMS) or ‖x_t − mean(x_t)‖ (LayerNorm) of float64 points x [N, d], per token.

    RMS: fl(√Σx²) ≤ ‖x‖(1 + γ_{d+1}), so shrink(d + 2) of it is below ‖x‖. LayerNorm: ŷ = fl(x − μ̂) with
    |μ̂ − μ| ≤ δ := γ_d·mean|x| (d − 1 sums and a division). Px ⊥ 1, so ‖x − μ̂1‖² = ‖Px‖² + d(μ − μ̂)² and
    ‖Px‖² ≥ ‖x − μ̂1‖² − dδ², with ‖x − μ̂1‖ ≥ ‖ŷ‖/(1 + u): a second-order correction only. Each remaining
    rounding is taken downward (1 − 4u after the square, the difference and the square root).
    """
    d = x.shape[-1]
    if kind != "layer":
        return torch.sqrt((x * x).sum(-1)) * shrink(d + 2)
    y = x - x.mean(dim=-1, keepdim=True)
    near = torch.sqrt((y * y).sum(-1)) * shrink(d + 4)
    delta = gamma_up(d) * x.abs().mean(-1) * grow(d + 2)
    off = d * delta * delta * grow(3)
    return torch.sqrt(torch.clamp(near * near * (1 - 4 * _U) - off, min=0.0)) * (1 - 4 * _U)


def kappa_up(p: NormParams, center: torch.Tensor, rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(κ, the radial lower bound): norm.py's κ at a rigorous lower bound of the radial part, rounded up past
    its own ≤ 7 roundings (the subtraction ρ, the square, /d, +eps, √, 1/·; κ is decreasing in the floor)."""
    rad = radial_lower(p.kind, center)
    return kappa(p, rad, rho, center.shape[-1]) * grow(8), rad


def eta_up(p: NormParams, kap: torch.Tensor, rho: torch.Tensor, d: int) -> torch.Tensor:
    """≥ ‖n(Y) − fl(n(c))‖ on the ball: min(ρκ, 2√d) (one product, and √d one rounding: grow(2)) plus the float64
    evaluation error of the center's normalisation (norm.rounding), then the sum's rounding."""
    return (eta(kap, rho, d) * grow(2) + norm_rounding(p, d)) * grow(1)


@dataclass(frozen=True)
class _AttnPart:
    a: torch.Tensor  # [T] attention Jacobian bound per query over the whole set
    z: torch.Tensor  # [T, d] mid-block residual at the traced input
    z_radius: torch.Tensor  # [T] radius of a ball around z containing every Z_t(Y), Y in the set
    zero_norm: bool


def _attention_part(prep: PreparedBlock, s: Neighbourhood) -> _AttnPart:
    d = prep.d
    # The MLP ball's center: any float point will do (its distance to every exact Z_t(Y) is what is bounded).
    z0 = s.x + attention_center(prep, normalise(prep.norm1, s.x), s.positions, enclose=False).out
    a = torch.zeros(s.x.shape[0], dtype=F64)
    z_radius = torch.zeros_like(a)
    zero = False
    mu = _mu(s)
    # ‖Attn(n(c)) − Attn(ñ)‖ ≤ Lip_n·‖n(c) − ñ‖: the attention's Lipschitz constant in n over ‖n_s‖ ≤ √d
    # (global, crude) times the normalisation's rounding (~1e-15·√d): negligible next to the box radii.
    n_move = attention_bound_global(prep, kap=1.0) * norm_rounding(prep.norm1, d) * grow(1)
    for center, rho in zip(s.centers, s.radii, strict=True):
        k1, rad1 = kappa_up(prep.norm1, center, rho)
        zero |= bool((rho >= rad1).any())
        # The exact n(Y) lies within η of the exact n(center), which lies within `rounding` of ñ = fl(n(center)).
        e1 = eta_up(prep.norm1, k1, rho, d)
        c = attention_center(prep, normalise(prep.norm1, center), s.positions)
        geo = AttentionGeometry(prep, c, s.positions)
        a = torch.maximum(a, attention_bound(geo, k1, e1, mu))
        # ‖Attn_t(Y) − Attn_t(ñ)‖ on the box, two ways, both hold: directly; or through the Jacobian from the
        # center (mean value on the box) plus the move from n(center) to ñ.
        via_jac = (attention_bound(geo, k1, e1, rho) + n_move) * grow(1)
        moved = torch.minimum(via_jac, attention_displacement(geo, e1))
        # Every exact Z_t(Y) of this box lies within ‖Z_t(c) − z_c‖ + ‖z_c − z0‖ + ρ_t + moved_t of z0, where
        # z_c = fl(c + Attn(ñ)) and Attn(ñ) ∈ out ± out_rad: ‖Z_t(c) − z_c‖ ≤ ‖out_rad + u|z_c|‖.
        z_c = center + c.out
        z_err = torch.sqrt(((c.out_rad + _U * z_c.abs()) ** 2).sum(-1)) * grow(d + 6)
        gap = (z_c - z0).norm(dim=-1) * grow(d + 3)
        reach = (gap + z_err + rho + moved) * grow(3)
        z_radius = torch.maximum(z_radius, reach)
    return _AttnPart(a, z0, z_radius, zero)


def _mu(s: Neighbourhood) -> torch.Tensor:
    return torch.ones(s.x.shape[0], dtype=F64) if s.mu is None else s.mu


def _w_out(s: Neighbourhood) -> torch.Tensor:
    return torch.ones(s.x.shape[0], dtype=F64) if s.w_out is None else s.w_out


def local_bound(prep: PreparedBlock, sets: list[Neighbourhood]) -> LocalBound:
    """sup over the sets of the Jacobian's operator norm, from each set's input to its output distance:
    with ‖δ_s‖ ≤ μ_s, ‖(Jδ)_t‖ ≤ (1 + m_t)(μ_t + a_t(μ)), so L = max_t w_out_t(1 + m_t)(μ_t + a_t(μ)).

    An upper bound by construction: every factor is one (attention.py, mlp.py, the helpers above), and the
    products and sums that combine them are rounded up by `grow` with their count (no relative margin)."""
    d = prep.d
    mu = torch.cat([_mu(s) for s in sets])
    w_out = torch.cat([_w_out(s) for s in sets])
    parts = [_attention_part(prep, s) for s in sets]
    a = torch.cat([p.a for p in parts])
    z = torch.cat([p.z for p in parts])
    rho_z = torch.cat([p.z_radius for p in parts])
    k2, rad2 = kappa_up(prep.norm2, z, rho_z)
    zero = any(p.zero_norm for p in parts) or bool((rho_z >= rad2).any())
    box = local_boxes(prep, normalise(prep.norm2, z), eta_up(prep.norm2, k2, rho_z, d))
    # One envelope of the box radii per prompt, each token's scaled by its own κ: κ_t·radius_t ≤ R_p for
    # every token t of prompt p (a per-token split would cost two spectral norms per token). split_bound is
    # positively homogeneous, so split(κh) = κ·split(h); κh is one product: grow(1).
    sizes = [s.x.shape[0] for s in sets]
    scaled = k2[:, None] * box.half * grow(1)
    radius = torch.cat([torch.full((n,), split_bound(prep, part.amax(0)), dtype=F64)
                        for part, n in zip(scaled.split(sizes), sizes, strict=True)])

    def block_const(i: torch.Tensor, center: torch.Tensor) -> torch.Tensor:  # only ranks tokens for refinement
        return w_out[i] * (1 + k2[i] * center + radius[i]) * (mu[i] + a[i])

    def combine(i, m_i):  # w_out(1 + m)(μ + a): 4 roundings on upper bounds
        return w_out[i] * (1 + m_i) * (mu[i] + a[i]) * grow(4)

    centers, refined = center_norms(prep, box.mid, block_const)
    m = (k2 * centers + radius) * grow(2)
    every = torch.arange(a.shape[0])
    per = combine(every, m)
    # The envelope is loose for any single token: give the token that sets the maximum its own split
    # bound, until the maximum is held by a token that already has it (each value stays an upper bound).
    own = torch.zeros(a.shape[0], dtype=torch.bool)
    while not bool(own[int(per.argmax())]):
        i = int(per.argmax())
        own[i] = True
        mine = split_bound(prep, k2[i] * box.half[i] * grow(1))
        m[i] = (k2[i] * centers[i] + min(float(radius[i]), mine)) * grow(2)
        per[i] = combine(i, m[i])
    return LocalBound(
        lipschitz=float(per.max()), k_attn=float(a.max()), k_mlp=float(m.max()),
        per_token=tuple(per.split(sizes)), zero_norm=zero, tokens_exact=refined,
    )


# The global Lipschitz rule of each op of the registry (core/ops.py), as the factor its residual branch
# contributes: a norm has none of its own, because its κ is inside the rule of the op it feeds (the branch
# `norm → attention` is bounded as a whole: the norm's bounded output set is what makes attention Lipschitz).
GLOBAL_RULES = {"norm": None, "attention": attention_bound_global, "mlp": mlp_bound_global, "residual": None}


def global_bound(prep: PreparedBlock) -> GlobalBound:
    """A Lipschitz constant valid for all inputs (finite only because eps > 0 and norms bound their output)."""
    a = GLOBAL_RULES["attention"](prep)
    m = GLOBAL_RULES["mlp"](prep)
    return GlobalBound(lipschitz=(1 + m) * (1 + a) * grow(3), k_attn=a, k_mlp=m)  # 3 roundings on upper bounds
