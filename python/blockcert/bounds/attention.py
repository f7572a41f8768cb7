"""Causal softmax attention after a norm layer: the center values at a traced prompt, and per query token a
bound on how far its output can move, over a set of inputs around that prompt.

The set is S = {Y : ‖Y_s − x_s‖ ≤ ρ_s for every token s} (per-token radii; the max-token ball when all ρ_s
are equal). For a direction δ with ‖δ_s‖ ≤ μ_s (μ ≡ 1 for the Jacobian's operator norm in the max-token
distance; μ = ρ for the displacement Attn(Y) − Attn(x)), and Y ∈ S, head h's contribution to the output of
query t moves by (u_s = W_o^h v_s, the head's value written into the residual stream)

    W_o^h d o_t = Σ_s A_ts W_o^h W_v dn_s  +  Σ_s A_ts (dz_ts − Σ_r A_tr dz_tr)(u_s − ū_t)
                  value part                  softmax part = Cov_{A_t}(dz_t, u)

with ‖dn_s‖ ≤ ν_s := κ_s μ_s (norm.py) and dz_ts = scale·(dq̃_t·k̃_s + q̃_t·dk̃_s). Because A_t is a
probability vector the value part is at most ‖W_o^h W_v‖·E_{A_t}[ν] — no factor of the sequence length.
The softmax part splits into the query's move, Cov(u, k̃)·dq̃_t, whose operator norm is computed exactly
on the head dimension, and the keys' move, at most Σ_s A_ts |q̃_t·dk̃_s|·‖u_s − ū_t‖. Both are small when
attention is concentrated (e.g. on a sink token). A_t(Y) is not A_t(x): each score moves by at most
Δz_ts, so A_ts(Y) ∈ [A_ts e^{−Δz_ts − max_r Δz_tr}, min(1, A_ts e^{Δz_ts + max_r Δz_tr})]; expectations
under A_t(Y) of nonnegative f are bounded by a small linear program (`lp_max`), and the differences from
the center values are added as explicit correction terms. docs/bounds.md §3 derives each term.

Rounding (issue 18): every center quantity is an enclosure, not a float64 value trusted to 1e-9. The reference
point is the float64 normalised input ñ (its distance to the exact n(Y) is inside η, norm.py's `rounding`);
q, k, v, the rotated q̃, k̃, the scores, the probabilities A_t and the output are midpoint–radius enclosures of
the exact real values at ñ (pointwise.py's `linear`, `matmul`, `softmax`, and `_rope_enclosed` here, with γ_n
of each sum's length; the folded biases carry their own radius, weights.py). The derived quantities (‖u_s − ū_t‖,
‖W_qᵀR_tᵀ(k̃_s − k̄_t)‖, ‖W_kᵀR_sᵀq̃_t‖, the covariance term) are bounded for every exact value inside those
enclosures, with the rounding of the head-dimension Gram matrices (γ_d‖W‖_F², inner dimension d) and of
every product that forms them added explicitly. The bound is then assembled from these upper bounds by
monotone operations only (+, ×, √, exp, min, max, the LP), each of whose float64 roundings is ≤ u relative
(exp and expm1: ≤ 1e-12, the recorded libm assumption); the number of roundings on any path is counted
(`grow`, spectral.py) and restored at the end of each function, so each returned value is an upper bound by
construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from blockcert.bounds.activations import outward
from blockcert.bounds.norm import kappa_global
from blockcert.bounds.pointwise import Enclosure, linear, matmul, softmax
from blockcert.bounds.pointwise import _up as _rad_up
from blockcert.bounds.spectral import gamma_up, grow, spectral_upper_many
from blockcert.bounds.weights import F64, PreparedBlock

_U = 2.0**-53  # unit roundoff of float64
# torch's float64 exp and expm1 are taken to be accurate to _FN relative (libm: a few ulp): the assumption the
# bound records. fl(e·_EXP_UP) ≥ e(1 + _FN) then covers the function's error and that multiplication.
_FN = 1e-12
_EXP_UP = 1 + 2 * _FN


@dataclass(frozen=True)
class AttentionCenter:
    """Everything the bound needs at the traced prompt (T valid tokens, float64): midpoints, and radii such that
    the exact value of the real attention at the float64 input ñ lies in mid ± rad elementwise (radii are
    None for a center computed with enclose=False, whose midpoints are only used as a point to expand around)."""

    q: torch.Tensor  # [T, H, hd] rotated queries
    k: torch.Tensor  # [T, H, hd] rotated keys, repeated to query heads
    v: torch.Tensor  # [T, H, hd] values, repeated to query heads
    probs: torch.Tensor  # [H, T, T] attention weights (0 above the diagonal)
    out: torch.Tensor  # [T, d] the attention sublayer's output
    q_rad: torch.Tensor | None = None
    k_rad: torch.Tensor | None = None
    v_rad: torch.Tensor | None = None
    probs_rad: torch.Tensor | None = None
    out_rad: torch.Tensor | None = None


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * cos[:, None] + rot * sin[:, None]


def causal(t: int) -> torch.Tensor:
    return torch.ones(t, t, dtype=torch.bool).tril()


def _center_point(prep: PreparedBlock, n: torch.Tensor, positions: torch.Tensor) -> AttentionCenter:
    g = prep.group_of_head
    q = torch.einsum("hkd,td->thk", prep.wq, n) + prep.bq
    k = torch.einsum("gkd,td->tgk", prep.wk, n) + prep.bk
    v = torch.einsum("gkd,td->tgk", prep.wv, n) + prep.bv
    if prep.rope_cos is not None:
        cos, sin = prep.rope_cos[positions], prep.rope_sin[positions]
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    k, v = k[:, g], v[:, g]
    scores = torch.einsum("thk,shk->hts", q, k) * prep.scaling
    scores = scores.masked_fill(~causal(n.shape[0]), -math.inf)
    probs = torch.softmax(scores, dim=-1)
    o = torch.einsum("hts,shk->thk", probs, v).reshape(n.shape[0], -1)
    return AttentionCenter(q, k, v, probs, o @ prep.wo.T + prep.bo)


def _project(x: Enclosure, w: torch.Tensor, b: torch.Tensor, b_rad: torch.Tensor) -> Enclosure:
    """W n + b for per-head weights w [H, hd, d] as an enclosure [T, H, hd]; b_rad: the folded bias's radius."""
    heads, hd, d = w.shape
    lin = linear(x, w.reshape(heads * hd, d), b.reshape(-1))
    rad = _rad_up(lin.rad + b_rad.reshape(-1), 2)
    return Enclosure(lin.mid.view(-1, heads, hd), rad.view(-1, heads, hd))


def _rope_enclosed(x: Enclosure, cos: torch.Tensor, sin: torch.Tensor) -> Enclosure:
    """q⊙cos + rotate_half(q)⊙sin on an enclosure: the radius moves with the swap of halves but keeps its sign
    (|rotate_half(q)| = swap(|q|)), plus the two products' and the sum's rounding, 2u(|a| + |b|)."""
    h = x.mid.shape[-1] // 2
    a = x.mid * cos
    b = torch.cat((-x.mid[..., h:], x.mid[..., :h]), dim=-1) * sin
    swapped = torch.cat((x.rad[..., h:], x.rad[..., :h]), dim=-1)
    return Enclosure(a + b, _rad_up(x.rad * cos.abs() + swapped * sin.abs() + 2 * _U * (a.abs() + b.abs())))


def _heads_first(x: Enclosure) -> Enclosure:
    return Enclosure(x.mid.transpose(0, 1), x.rad.transpose(0, 1))


def attention_center(prep: PreparedBlock, n: torch.Tensor, positions: torch.Tensor,
                     enclose: bool = True) -> AttentionCenter:
    """The interpreter's attention on unit-gain normalised inputs n [T, d], in float64, enclosed.

    The exact values enclosed are those of the real attention function at the float64 point ñ = n (norm.py's
    `rounding` accounts for n's distance to the exact normalised input): linear maps with γ_{d+1}, the rotary
    map with its two products, q̃·k̃ with γ_hd, softmax by its monotonicity in each score, A·v with γ_T and the
    output projection with γ_{H·hd+1} (bounds/pointwise.py). With enclose=False only the midpoints are formed.
    """
    if not enclose:
        return _center_point(prep, n, positions)
    t_len = n.shape[0]
    g = prep.group_of_head
    x = Enclosure.point(n)
    q = _project(x, prep.wq, prep.bq, prep.bq_rad)
    k = _project(x, prep.wk, prep.bk, prep.bk_rad)
    v = _project(x, prep.wv, prep.bv, prep.bv_rad)
    if prep.rope_cos is not None:
        cos, sin = prep.rope_cos[positions][:, None], prep.rope_sin[positions][:, None]
        q, k = _rope_enclosed(q, cos, sin), _rope_enclosed(k, cos, sin)
    k, v = Enclosure(k.mid[:, g], k.rad[:, g]), Enclosure(v.mid[:, g], v.rad[:, g])
    qh = _heads_first(q)  # [H, T, hd]
    raw = matmul(qh, Enclosure(k.mid.permute(1, 2, 0), k.rad.permute(1, 2, 0)))  # [H, T, S]
    sc = prep.scaling
    scores = Enclosure(raw.mid * sc, _rad_up(raw.rad * abs(sc) + _U * (raw.mid * sc).abs()))
    mask = causal(t_len)
    p = softmax(scores, mask)
    zero = torch.zeros((), dtype=F64)
    probs = Enclosure(torch.where(mask, p.mid, zero), torch.where(mask, p.rad, zero))  # masked: exactly 0
    o = _heads_first(matmul(probs, _heads_first(v)))  # [T, H, hd]
    merged = Enclosure(o.mid.reshape(t_len, -1), o.rad.reshape(t_len, -1))
    out = linear(merged, prep.wo, prep.bo)
    return AttentionCenter(q.mid, k.mid, v.mid, probs.mid, out.mid,
                           q_rad=q.rad, k_rad=k.rad, v_rad=v.rad, probs_rad=probs.rad, out_rad=out.rad)


def lp_max(f: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """≥ max Σ_s p_s f_s over 0 ≤ p ≤ ω, Σ_s p_s = 1 (along the last axis; needs Σ ω ≥ 1, f ≥ 0).

    Greedy is optimal for this fractional knapsack: fill the largest f first, each up to its cap. With f sorted
    down and W_k = Σ_{j≤k} ω_j, the greedy value is Σ_k f_k (min(W_k, 1) − min(W_{k−1}, 1)) = Σ_k (f_k − f_{k+1})
    min(W_k, 1) (summation by parts, f_{S+1} = 0), monotone in every W_k and every difference. Rounded up: the
    partial sums W_k (≤ S − 1 roundings) by grow(S), the value (difference, product, S-term sum: ≤ S + 1
    roundings) by grow(S + 1). The value is also monotone and positively homogeneous in f, and monotone in ω,
    so inputs that are upper bounds computed to (1 − u)^k give an output computed to the same (1 − u)^k.
    """
    n = f.shape[-1]
    f_sorted, idx = torch.sort(f, dim=-1, descending=True)
    w = torch.gather(omega, -1, idx)
    cap = torch.clamp(torch.cumsum(w, dim=-1) * grow(n), max=1.0)
    nxt = torch.cat([f_sorted[..., 1:], torch.zeros_like(f_sorted[..., :1])], dim=-1)
    return ((f_sorted - nxt) * cap).sum(-1) * grow(n + 1)


def rotation_matrices(prep: PreparedBlock, positions: torch.Tensor) -> torch.Tensor:
    """[T, hd, hd]: the interpreter's rotary map at each position, q̃ = q⊙cos + rotate_half(q)⊙sin, as R_t q.

    Formed exactly: the diagonal holds cos, the off-diagonal ±sin (products with ±1), at disjoint positions."""
    hd = prep.head_dim
    eye = torch.eye(hd, dtype=F64)
    if prep.rope_cos is None:
        return eye.expand(len(positions), hd, hd)
    h = hd // 2
    rot = torch.zeros(hd, hd, dtype=F64)  # rotate_half(q) = rot @ q
    rot[:h, h:] = -torch.eye(h, dtype=F64)
    rot[h:, :h] = torch.eye(h, dtype=F64)
    cos, sin = prep.rope_cos[positions], prep.rope_sin[positions]
    return torch.diag_embed(cos) + sin[:, :, None] * rot[None]


def _norm_up(y: torch.Tensor, depth: int = 0) -> torch.Tensor:
    """≥ ‖y*‖ along the last axis, where y* has |y*_j| ≤ |y_j|·(1 − u)^(−depth): y's entries are exact floats
    (depth 0) or magnitudes computed by ≤ `depth` monotone roundings (a radius)."""
    return torch.sqrt((y * y).sum(-1)) * grow(y.shape[-1] + 2 * depth + 2)


def _form_norm(y: torch.Tensor, y_err: torch.Tensor, gram: torch.Tensor, fro_sq: float, w_norm: float,
               inner: int) -> torch.Tensor:
    """≥ ‖Wᵀy*‖ for every exact y* with ‖y* − y‖ ≤ y_err, from gram = fl(W Wᵀ) (W: [r, inner], y: [..., r]).

    ‖Wᵀy*‖ ≤ ‖Wᵀy‖ + ‖W‖·y_err, and ‖Wᵀy‖² = yᵀ(WWᵀ)y differs from the computed fl((y·gram)·y) by at most
    (γ_inner + γ_{2r+2}(1 + γ_inner))·‖W‖_F²·‖y‖²: |gram − WWᵀ| ≤ γ_inner|W||W|ᵀ elementwise (Higham Thm 3.1),
    the quadratic form's own rounding is ≤ γ_{2r}|y|ᵀ|gram||y|, and |y|ᵀ|M||y| ≤ ‖M‖_F‖y‖² with
    ‖ |W||W|ᵀ ‖_F ≤ ‖W‖_F². The square root, sums and products then round up by a counted `grow`.
    """
    r = y.shape[-1]
    quad = ((y @ gram) * y).sum(-1)
    coef = (gamma_up(inner) + gamma_up(2 * r + 2) * (1 + gamma_up(inner))) * grow(3)
    slack = coef * fro_sq * (y * y).sum(-1) * grow(r + 3)
    return (torch.sqrt(torch.clamp(quad + slack, min=0.0)) + w_norm * y_err) * grow(4) + 1e-300


def _deviations(x: Enclosure, mean: Enclosure) -> tuple[torch.Tensor, torch.Tensor]:
    """x_s − m_t ([T, S, r] midpoints) for x: [S, r], mean: [T, r], and ≥ ‖exact − mid‖ per (t, s): the two
    radii plus the subtraction's rounding u|mid| (each entry 3 roundings below exact, then the norm)."""
    mid = x.mid[None] - mean.mid[:, None]
    rad = x.rad[None] + mean.rad[:, None] + _U * mid.abs()
    return mid, _norm_up(rad, depth=3)


@dataclass(frozen=True)
class _HeadTerms:
    """Per head, query t (and key s), upper bounds of the exact center quantities the bound is assembled from."""

    cross: torch.Tensor  # [T] ≥ ‖Cov_{A_t}(u, k̃)·R_t·W_q‖₂
    u_dev: torch.Tensor  # [T, S] ≥ ‖u_s − ū_t‖
    qk: torch.Tensor  # [T, S] ≥ ‖W_qᵀ R_tᵀ (k̃_s − k̄_t)‖
    kq: torch.Tensor  # [T, S] ≥ ‖W_kᵀ R_sᵀ q̃_t‖
    p_lo: torch.Tensor  # [T, S] ≤ A_ts (exact, at ñ)
    p_hi: torch.Tensor  # [T, S] ≥ A_ts


class AttentionGeometry:
    """The center-dependent parts of the bound at one prompt, in the residual stream (u_s = W_o^h v_s).

    Everything is computed on the head dimension: with O = W_o^hᵀ W_o^h, ‖u_s − ū_t‖² is a
    quadratic form in v_s − v̄_t, and Cov_{A_t}(u, k̃) = W_o^h·C_t with C_t = Σ_s A_ts (v_s − v̄_t)(k̃_s − k̄_t)ᵀ,
    so ‖Cov·R_t·W_q‖² ≤ λ_max(Lᵀ R_tᵀ C_tᵀ O C_t R_t L) (L Lᵀ ⪰ W_q W_qᵀ) is an hd × hd eigenvalue bound.
    Each quantity is bounded for every exact value inside the center's enclosures (see `_head`).
    """

    def __init__(self, prep: PreparedBlock, c: AttentionCenter, positions: torch.Tensor):
        if c.probs_rad is None:
            raise ValueError("AttentionGeometry needs an enclosed center (attention_center(..., enclose=True))")
        self.prep, self.c = prep, c
        rot = rotation_matrices(prep, positions)  # [T, hd, hd], exact
        rot_f = _norm_up(rot.flatten(1))  # [T] ≥ ‖R_t‖_F
        per_head, grams = [], []
        for h in range(prep.n_heads):
            parts, gram = self._head(h, rot, rot_f)
            per_head.append(parts)
            grams.append(gram)
        # λ_max of every head's and query's hd × hd Gram matrix in one batched Gram iteration.
        up, _ = spectral_upper_many(torch.cat(grams), rtol=1e-2)
        up = up.view(prep.n_heads, -1)
        d, hd = prep.d, prep.head_dim
        g_coef = (gamma_up(d) + gamma_up(2 * hd) * (1 + gamma_up(d))) * grow(3)
        terms = []
        for h, (u_dev, qk, kq, p_lo, p_hi, side_sq, side_err, c_err) in enumerate(per_head):
            no, nl = float(prep.no[h]), float(prep.nl[h])
            # ‖W_o Ŝ‖² = λ_max(ŜᵀOŜ) ≤ ‖fl(ŜᵀÕŜ)‖₂ + (γ_d + γ_{2hd}(1 + γ_d))‖W_o^h‖_F²‖Ŝ‖_F², then
            # ‖W_o C R W_q‖ ≤ ‖W_o C R L‖ ≤ ‖W_o Ŝ‖ + ‖W_o‖(‖Ŝ − ĈRL‖_F + ‖C − Ĉ‖_F·ρ_rope·‖L‖).
            err_g = g_coef * float(prep.fo[h]) * side_sq * grow(2)
            cross = (torch.sqrt(up[h] + err_g) + no * side_err + no * prep.rope_gain * nl * c_err) * grow(6)
            terms.append(_HeadTerms(cross=cross, u_dev=u_dev, qk=qk, kq=kq, p_lo=p_lo, p_hi=p_hi))
        self.terms = terms

    def _head(self, h: int, rot: torch.Tensor, rot_f: torch.Tensor):
        """Head h's center quantities, each an upper bound over the enclosures; and its hd × hd Gram matrix."""
        prep, c = self.prep, self.c
        d, hd = prep.d, prep.head_dim
        gi = int(prep.group_of_head[h])
        rg = prep.rope_gain
        t_len = c.probs.shape[-1]
        mask = causal(t_len)
        zero = torch.zeros((), dtype=F64)
        p, p_rad = c.probs[h], c.probs_rad[h]  # [T, S]
        lo, hi = outward(p, p_rad)  # exact endpoints: A_ts ∈ [lo, hi]
        p_lo = torch.where(mask, torch.clamp(lo, min=0.0), zero)
        p_hi = torch.where(mask, torch.clamp(hi, max=1.0), zero)
        probs = Enclosure(p, p_rad)
        v = Enclosure(c.v[:, h], c.v_rad[:, h])  # [S, hd]
        k = Enclosure(c.k[:, h], c.k_rad[:, h])
        v_c, v_cr = _deviations(v, matmul(probs, v))  # v_s − v̄_t  [T, S, hd], radius norm [T, S]
        k_c, k_cr = _deviations(k, matmul(probs, k))  # k̃_s − k̄_t
        v_n, k_n = _norm_up(v_c), _norm_up(k_c)
        # ‖fl(R_tᵀy) − R_tᵀy‖ ≤ γ_hd‖ |R_t| ‖₂‖y‖ and ‖ |R_t| ‖₂ ≤ √2·ρ_rope (2 × 2 blocks): 2ρ_rope·γ_hd.
        g_rot = 2 * rg * gamma_up(hd)
        u_dev = _form_norm(v_c, v_cr, prep.o_gram[h], float(prep.fo[h]), float(prep.no[h]), d)
        qt = torch.einsum("tji,tsj->tsi", rot, k_c)  # R_tᵀ (k̃_s − k̄_t)
        qk = _form_norm(qt, (rg * k_cr + g_rot * k_n) * grow(3), prep.wq_gram[h], float(prep.fq[h]),
                        float(prep.nq[h]), d)
        q_n, q_cr = _norm_up(c.q[:, h]), _norm_up(c.q_rad[:, h])  # [T]
        kt = torch.einsum("sji,tj->tsi", rot, c.q[:, h])  # R_sᵀ q̃_t  [T, S, hd]
        kq = _form_norm(kt, ((rg * q_cr + g_rot * q_n) * grow(3))[:, None], prep.wk_gram[gi],
                        float(prep.fk[gi]), float(prep.nk[gi]), d)
        cmat = torch.einsum("ts,tsi,tsj->tij", p, v_c, k_c)  # Ĉ_t  [T, hd, hd]
        side = cmat @ (rot @ prep.wq_factor[h])  # Ŝ_t = fl(Ĉ_t fl(R_t L))
        gram = side.transpose(1, 2) @ prep.o_gram[h] @ side
        # ‖C_t − Ĉ_t‖_F: the exact A, v − v̄, k̃ − k̄ lie in their enclosures, A y zᵀ − p ŷ ẑᵀ =
        # (A − p) y zᵀ + p (y − ŷ) zᵀ + p ŷ (z − ẑ)ᵀ; and the einsum rounds each entry by γ_{S+2}Σ_s p|ŷ||ẑ|.
        vv, kk = v_n + v_cr, k_n + k_cr
        c_in = torch.where(mask, p_rad * vv * kk + p * (v_cr * kk + v_n * k_cr), zero).sum(-1)
        c_fl = gamma_up(t_len + 2) * torch.where(mask, p * v_n * k_n, zero).sum(-1)
        c_err = (c_in + c_fl) * grow(t_len + 8)
        # ‖Ŝ − Ĉ R L‖_F ≤ γ_hd‖Ĉ‖_F‖fl(RL)‖_F + ‖Ĉ‖_F γ_hd‖R‖_F‖L‖_F ≤ 3γ_hd‖Ĉ‖_F‖R_t‖_F‖L‖_F.
        side_err = 3 * gamma_up(hd) * float(prep.lf[h]) * _norm_up(cmat.flatten(1)) * rot_f * grow(4)
        side_sq = (side * side).sum((1, 2)) * grow(hd * hd + 1)
        return (u_dev, qk, kq, p_lo, p_hi, side_sq, side_err, c_err), gram

    def _weights(self, h: int, tm: _HeadTerms, eta: torch.Tensor):
        """For head h on the set: (ω, δp) with A_ts(Y) ≤ ω_ts and |A_ts(Y) − A_ts(ñ)| ≤ δp_ts, both rigorous."""
        prep = self.prep
        g = prep.group_of_head
        rg, sc = prep.rope_gain, abs(prep.scaling)
        mask = causal(eta.shape[0])
        zero = torch.zeros((), dtype=F64)
        dq = rg * float(prep.nq[h]) * eta
        dk = rg * float(prep.nk[int(g[h])]) * eta
        # Softmax ignores a common shift of a query's scores, so the query's own move only counts
        # through k̃_s − k̄_t: |z_ts(Y) − z_ts(ñ) − shift_t| ≤ Δz_ts = sc·(‖W_qᵀR_tᵀ(k̃_s − k̄_t)‖η_t
        # + ‖W_kᵀR_sᵀq̃_t‖η_s + rg²‖W_q‖‖W_k‖η_tη_s).
        dz = sc * (tm.qk * eta[:, None] + tm.kq * eta[None, :] + dq[:, None] * dk[None, :])
        dz = torch.where(mask, dz, zero)
        # Δz + max_r Δz: ≤ 9 roundings on any path from the (upper-bound) leaves; rounded up before exp.
        big = (dz + dz.amax(dim=-1, keepdim=True)) * grow(12)
        # A_ts(Y) ∈ [A e^{−big}, min(1, A e^{big})] and A ∈ [p_lo, p_hi]: A(Y) − A ≤ min(1 − A, A(e^{big} − 1)),
        # A − A(Y) ≤ A(1 − e^{−big}).
        omega = torch.clamp(tm.p_hi * (torch.exp(big) * _EXP_UP) * grow(1), max=1.0)
        up_move = torch.minimum((1 - tm.p_lo) * grow(1), tm.p_hi * (torch.expm1(big) * _EXP_UP) * grow(1))
        down_move = tm.p_hi * (-torch.expm1(-big) * _EXP_UP) * grow(1)
        return torch.where(mask, omega, zero), torch.where(mask, torch.maximum(up_move, down_move), zero)

    def _n_val(self, h: int) -> float:
        return float(self.prep.n_ov[h])  # ‖W_o^h W_v‖: how far u_s = W_o^h v_s moves per unit move of n_s

    def displacement(self, eta: torch.Tensor) -> torch.Tensor:
        """Per head and query, a bound on ‖u-space move of o_t^h‖ = ‖Σ_s A'_s u'_s − Σ_s A_s u_s‖ ([H, T]).

        Σ_s A'_s (u'_s − u_s) + Σ_s (A'_s − A_s)(u_s − ū_t): at most E_{A'}[‖W_o W_v‖η_s] + Σ_s δp_s‖u_s − ū_t‖.
        (A: the exact weights at ñ; S + 1 roundings on any path, restored by grow.)
        """
        t_len = eta.shape[0]
        mask = causal(t_len)
        zero = torch.zeros((), dtype=F64)
        out = []
        for h, tm in enumerate(self.terms):
            omega, dp = self._weights(h, tm, eta)
            moved = lp_max(torch.where(mask, (self._n_val(h) * eta)[None, :].expand(t_len, t_len), zero), omega)
            out.append((moved + (dp * tm.u_dev).sum(-1)) * grow(t_len + 4))
        return torch.stack(out)

    def bound(self, kap: torch.Tensor, eta: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per head and query, bounds on the value part and the softmax part of ‖W_o^h (J δ)_t^h‖ ([H, T] each).

        Every input is an upper bound; every operation below is monotone on nonnegative values. Counting the
        roundings on the longest path (S = T keys): ν, δq, δk, δu ≤ 2; eu ≤ S + 1, ek ≤ S + 5; cross ≤ 2S + 11;
        soft_q ≤ 2S + 14, soft_k ≤ S + 14; value ≤ 2 — so grow(2S + 16) restores an upper bound of each
        (taken as grow(3S + 32), its γ being negligible either way)."""
        prep = self.prep
        t_len = kap.shape[0]
        g = prep.group_of_head
        rg, sc = prep.rope_gain, abs(prep.scaling)
        mask = causal(t_len)
        zero = torch.zeros((), dtype=F64)
        nu = kap * mu
        lift = grow(3 * t_len + 32)
        values, softs = [], []
        for h, tm in enumerate(self.terms):
            nq, nk = float(prep.nq[h]), float(prep.nk[int(g[h])])
            n_val = self._n_val(h)
            dq = rg * nq * eta  # [T] move of q̃_t on the set
            dk = rg * nk * eta  # [S] move of k̃_s
            du = n_val * eta  # [S] move of u_s
            omega, dp = self._weights(h, tm, eta)

            def ex(f: torch.Tensor, omega=omega) -> torch.Tensor:  # sup over A_t(Y) of E[f], f ≥ 0: -> [T]
                return lp_max(torch.where(mask, f.expand(t_len, t_len), zero), omega)

            e_nu = ex(nu[None, :])
            # ‖ū_t(Y) − ū_t‖ and ‖W_qᵀR_tᵀ(k̄_t(Y) − k̄_t)‖: the moves of the two means.
            eu = (dp * tm.u_dev).sum(-1) + ex(du[None, :])
            ek = (dp * tm.qk).sum(-1) + rg * nq * ex(dk[None, :])
            # Query part: sc·ν_t·‖Cov_{A(Y)}(u(Y), k̃(Y)) R_t W_q‖.
            cross = (tm.cross + (dp * tm.u_dev * tm.qk).sum(-1)
                     + ex(du[None, :] * (tm.qk + rg * nq * dk[None, :])) + ex(tm.u_dev * rg * nq * dk[None, :])
                     + eu * ek)
            soft_q = sc * nu * cross
            # Key part: sc·Σ_s A_ts(Y)·|q̃_t(Y)·dk̃_s|·‖u_s(Y) − ū_t(Y)‖.
            reach = (tm.kq + rg * nk * dq[:, None]) * nu[None, :]  # ≥ |q̃_t(Y)·dk̃_s|
            soft_k = sc * (ex(reach * (tm.u_dev + du[None, :])) + ex(reach) * eu)
            values.append(n_val * e_nu * lift)
            softs.append((soft_q + soft_k) * lift)
        return torch.stack(values), torch.stack(softs)


def attention_bound(geo: AttentionGeometry, kap: torch.Tensor, eta: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Per query token t: sup over Y in the set and ‖δ_s‖ ≤ μ_s of ‖(J_attn(Y) δ)_t‖, [T] (heads added up)."""
    value, soft = geo.bound(kap, eta, mu)
    return (value + soft).sum(0) * grow(value.shape[0] + 1)


def attention_displacement(geo: AttentionGeometry, eta: torch.Tensor) -> torch.Tensor:
    """Per query t, sup over Y in the set of ‖Attn_t(Y) − Attn_t(ñ)‖, directly (not through the Jacobian), [T]."""
    moved = geo.displacement(eta)
    return moved.sum(0) * grow(moved.shape[0])


def attention_bound_global(prep: PreparedBlock, kap: float | None = None) -> float:
    """The same bound over all inputs: n(y) anywhere in the ball of radius √d, κ = 1/√eps, any A.

    With no center to expand around, each softmax part is bounded by Cauchy–Schwarz,
    ‖Cov(dz, u)‖ ≤ sd(dz)·max_s‖u_s − c‖, with everything at its largest on the image of the norm layer.
    With kap = 1 it is a Lipschitz constant of the attention itself in its normalised input n (‖n_s‖ ≤ √d).
    """
    g = prep.group_of_head
    kap = kappa_global(prep.norm1) if kap is None else kap
    rd = math.sqrt(prep.d)
    rg = prep.rope_gain
    nq, nk, nv = prep.nq, prep.nk[g], prep.nv[g]
    # The exact folded biases lie within their radii of the float ones (weights.py).
    bq = _norm_up(prep.bq) + _norm_up(prep.bq_rad)
    bk = (_norm_up(prep.bk) + _norm_up(prep.bk_rad))[g]
    q_up = rg * (bq + nq * rd)
    # Keys lie in a ball of radius k_rad around one point; rotation moves the bias, so then it counts too.
    k_rad = rg * (bk + nk * rd) if prep.rope_cos is not None else nk * rd
    sd = abs(prep.scaling) * kap * rg * (nq * k_rad + q_up * nk)
    soft_out = sd * prep.n_ov * rd  # ‖W_o^h(v_s − c)‖ ≤ ‖W_o^h W_v‖√d
    soft_pre = sd * nv * rd
    per_head = float((prep.n_ov * kap + soft_out).sum())
    whole = prep.n_o * float((nv * kap + soft_pre).pow(2).sum().sqrt())
    # Monotone operations on upper bounds: ≤ 16 roundings per term before the head sums (H − 1) and, for
    # `whole`, the squares, the square root and ‖W_o‖: grow(2·16 + H + 8) restores an upper bound.
    return min(per_head, whole) * grow(prep.n_heads + 40)
