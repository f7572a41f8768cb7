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
from blockcert.bounds.norm import eta, kappa, normalise, radial
from blockcert.bounds.norm import rounding as norm_rounding
from blockcert.bounds.weights import F64, PreparedBlock

RADIUS_MARGIN = 1e-6  # relative: box radii are rounded up past the float rounding of the deviations


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
    """K boxes covering the segment [x, x̂]: centers at the midpoints of K equal pieces, radius ‖x̂_t − x_t‖/2K."""
    x64, xh64 = _f64(x), _f64(x_hat)
    dev = (xh64 - x64).norm(dim=-1)
    k = pieces if bool((dev > 0).any()) else 1
    centers = tuple(x64 + ((2 * j + 1) / (2 * k)) * (xh64 - x64) for j in range(k))
    radius = dev / (2 * k) * (1 + RADIUS_MARGIN)
    return Neighbourhood(x64, centers, (radius,) * k, positions)


def ball(x: torch.Tensor, radius: float, positions: torch.Tensor) -> Neighbourhood:
    """The max-token ball of radius ρ around x."""
    x64 = _f64(x)
    return Neighbourhood(x64, (x64,), (torch.full((x.shape[0],), float(radius), dtype=F64),), positions)


def weighted_ball(x: torch.Tensor, radius: float, w_in: torch.Tensor, w_out: torch.Tensor,
                  positions: torch.Tensor) -> Neighbourhood:
    """The ball {Y : max_t w_in_t‖Y_t − x_t‖ ≤ ρ} (per-token radii ρ/w_in_t, rounded up), with the operator norm
    taken from the distance weighted by w_in to the one weighted by w_out."""
    x64 = _f64(x)
    w_in, w_out = _f64(w_in), _f64(w_out)
    radii = float(radius) / w_in * (1 + RADIUS_MARGIN)
    return Neighbourhood(x64, (x64,), (radii,), positions, mu=(1 / w_in) * (1 + RADIUS_MARGIN), w_out=w_out)


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


@dataclass(frozen=True)
class _AttnPart:
    a: torch.Tensor  # [T] attention Jacobian bound per query over the whole set
    z: torch.Tensor  # [T, d] mid-block residual at the traced input
    z_radius: torch.Tensor  # [T] radius of a ball around z containing every Z_t(Y), Y in the set
    zero_norm: bool


def _attention_part(prep: PreparedBlock, s: Neighbourhood) -> _AttnPart:
    d = prep.d
    z0 = s.x + attention_center(prep, normalise(prep.norm1, s.x), s.positions).out
    a = torch.zeros(s.x.shape[0], dtype=F64)
    z_radius = torch.zeros_like(a)
    zero = False
    mu = _mu(s)
    for center, rho in zip(s.centers, s.radii, strict=True):
        rad1 = radial(prep.norm1.kind, center)
        zero |= bool((rho >= rad1).any())
        k1 = kappa(prep.norm1, rad1, rho, d)
        # The exact n(Y) lies within η of the exact n(center), which lies within `rounding` of the computed one.
        e1 = eta(k1, rho, d) + norm_rounding(prep.norm1, d)
        c = attention_center(prep, normalise(prep.norm1, center), s.positions)
        geo = AttentionGeometry(prep, c, s.positions)
        a = torch.maximum(a, attention_bound(geo, k1, e1, mu))
        # ‖Attn_t(Y) − Attn_t(center)‖ on the box: through the Jacobian (mean value) or directly; both hold.
        moved = torch.minimum(attention_bound(geo, k1, e1, rho), attention_displacement(geo, e1))
        # Every Z_t(Y) of this box lies within ‖z_t(center) − z_t(x)‖ + ρ_t + moved_t of z_t(x).
        z_c = center + c.out
        reach = (z_c - z0).norm(dim=-1) * (1 + 1e-12) + rho + moved
        z_radius = torch.maximum(z_radius, reach * (1 + 1e-12))
    return _AttnPart(a, z0, z_radius, zero)


def _mu(s: Neighbourhood) -> torch.Tensor:
    return torch.ones(s.x.shape[0], dtype=F64) if s.mu is None else s.mu


def _w_out(s: Neighbourhood) -> torch.Tensor:
    return torch.ones(s.x.shape[0], dtype=F64) if s.w_out is None else s.w_out


def local_bound(prep: PreparedBlock, sets: list[Neighbourhood]) -> LocalBound:
    """sup over the sets of the Jacobian's operator norm, from each set's input to its output distance:
    with ‖δ_s‖ ≤ μ_s, ‖(Jδ)_t‖ ≤ (1 + m_t)(μ_t + a_t(μ)), so L = max_t w_out_t(1 + m_t)(μ_t + a_t(μ))."""
    d = prep.d
    mu = torch.cat([_mu(s) for s in sets])
    w_out = torch.cat([_w_out(s) for s in sets])
    parts = [_attention_part(prep, s) for s in sets]
    a = torch.cat([p.a for p in parts])
    z = torch.cat([p.z for p in parts])
    rho_z = torch.cat([p.z_radius for p in parts])
    rad2 = radial(prep.norm2.kind, z)
    zero = any(p.zero_norm for p in parts) or bool((rho_z >= rad2).any())
    k2 = kappa(prep.norm2, rad2, rho_z, d)
    box = local_boxes(prep, normalise(prep.norm2, z), eta(k2, rho_z, d) + norm_rounding(prep.norm2, d))
    # One envelope of the box radii per prompt, each token's scaled by its own κ: κ_t·radius_t ≤ R_p for
    # every token t of prompt p (a per-token split would cost two spectral norms per token).
    sizes = [s.x.shape[0] for s in sets]
    scaled = k2[:, None] * box.half
    radius = torch.cat([torch.full((n,), split_bound(prep, part.amax(0)), dtype=F64)
                        for part, n in zip(scaled.split(sizes), sizes, strict=True)])

    def block_const(i: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        return w_out[i] * (1 + k2[i] * center + radius[i]) * (mu[i] + a[i])

    centers, refined = center_norms(prep, box.mid, block_const)
    m = k2 * centers + radius
    per = w_out * (1 + m) * (mu + a)
    # The envelope is loose for any single token: give the token that sets the maximum its own split
    # bound, until the maximum is held by a token that already has it (each value stays an upper bound).
    own = torch.zeros(a.shape[0], dtype=torch.bool)
    while not bool(own[int(per.argmax())]):
        i = int(per.argmax())
        own[i] = True
        m[i] = k2[i] * centers[i] + min(float(radius[i]), split_bound(prep, k2[i] * box.half[i]))
        per[i] = w_out[i] * (1 + m[i]) * (mu[i] + a[i])
    return LocalBound(
        lipschitz=float(per.max()) * (1 + 1e-9), k_attn=float(a.max()), k_mlp=float(m.max()),
        per_token=tuple(t * (1 + 1e-9) for t in per.split(sizes)), zero_norm=zero,
        tokens_exact=refined,
    )


# The global Lipschitz rule of each op of the registry (core/ops.py), as the factor its residual branch
# contributes: a norm has none of its own, because its κ is inside the rule of the op it feeds (the branch
# `norm → attention` is bounded as a whole: the norm's bounded output set is what makes attention Lipschitz).
GLOBAL_RULES = {"norm": None, "attention": attention_bound_global, "mlp": mlp_bound_global, "residual": None}


def global_bound(prep: PreparedBlock) -> GlobalBound:
    """A Lipschitz constant valid for all inputs (finite only because eps > 0 and norms bound their output)."""
    a = GLOBAL_RULES["attention"](prep)
    m = GLOBAL_RULES["mlp"](prep)
    return GlobalBound(lipschitz=(1 + m) * (1 + a) * (1 + 1e-9), k_attn=a, k_mlp=m)
