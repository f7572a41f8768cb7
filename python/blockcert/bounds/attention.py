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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from blockcert.bounds.norm import kappa_global
from blockcert.bounds.spectral import spectral_upper_many
from blockcert.bounds.weights import F64, PreparedBlock

_NUDGE = 1 + 1e-10  # covers the float64 rounding of the (short) sums and products that form each term


@dataclass(frozen=True)
class AttentionCenter:
    """Everything the bound needs at the traced prompt (T valid tokens, float64)."""

    q: torch.Tensor  # [T, H, hd] rotated queries
    k: torch.Tensor  # [T, H, hd] rotated keys, repeated to query heads
    v: torch.Tensor  # [T, H, hd] values, repeated to query heads
    probs: torch.Tensor  # [H, T, T] attention weights (0 above the diagonal)
    out: torch.Tensor  # [T, d] the attention sublayer's output


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * cos[:, None] + rot * sin[:, None]


def causal(t: int) -> torch.Tensor:
    return torch.ones(t, t, dtype=torch.bool).tril()


def attention_center(prep: PreparedBlock, n: torch.Tensor, positions: torch.Tensor) -> AttentionCenter:
    """The interpreter's attention on unit-gain normalised inputs n [T, d], in float64."""
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


def lp_max(f: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """max Σ_s p_s f_s over 0 ≤ p ≤ ω, Σ_s p_s = 1 (along the last axis; needs Σ ω ≥ 1, f ≥ 0).

    Greedy is optimal for this fractional knapsack: fill the largest f first, each up to its cap.
    """
    f_sorted, idx = torch.sort(f, dim=-1, descending=True)
    w = torch.gather(omega, -1, idx)
    before = torch.cumsum(w, dim=-1) - w
    p = torch.minimum(w, torch.clamp(1.0 - before, min=0.0))
    return (p * f_sorted).sum(-1) * _NUDGE


def rotation_matrices(prep: PreparedBlock, positions: torch.Tensor) -> torch.Tensor:
    """[T, hd, hd]: the interpreter's rotary map at each position, q̃ = q⊙cos + rotate_half(q)⊙sin, as R_t q."""
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


def _quad_norm(y: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """sqrt(yᵀ·gram·y) along the last axis = ‖Wᵀ y‖ for gram = W Wᵀ (nudged up past its rounding)."""
    return torch.sqrt(torch.clamp(torch.einsum("...i,ij,...j->...", y, gram, y), min=0.0)) * _NUDGE + 1e-300


@dataclass(frozen=True)
class _HeadTerms:
    """Per head, query t (and key s), the center quantities the bound is assembled from."""

    cross: torch.Tensor  # [T] ‖Cov_{A_t}(u, k̃)·R_t·W_q‖₂ (exact up to the Gram rounding allowance)
    u_dev: torch.Tensor  # [T, S] ‖u_s − ū_t‖
    qk: torch.Tensor  # [T, S] ‖W_qᵀ R_tᵀ (k̃_s − k̄_t)‖
    kq: torch.Tensor  # [T, S] ‖W_kᵀ R_sᵀ q̃_t‖


class AttentionGeometry:
    """The center-dependent parts of the bound at one prompt, in the residual stream (u_s = W_o^h v_s).

    Everything is computed on the head dimension: with O = W_o^hᵀ W_o^h, ‖u_s − ū_t‖² is a
    quadratic form in v_s − v̄_t, and Cov_{A_t}(u, k̃) = W_o^h·C_t with C_t = Σ_s A_ts (v_s − v̄_t)(k̃_s − k̄_t)ᵀ,
    so ‖Cov·R_t·W_q‖² = λ_max(Lᵀ R_tᵀ C_tᵀ O C_t R_t L) (L Lᵀ ⪰ W_q W_qᵀ) is an hd × hd eigenvalue bound.
    """

    def __init__(self, prep: PreparedBlock, c: AttentionCenter, positions: torch.Tensor):
        self.prep, self.c = prep, c
        rot = rotation_matrices(prep, positions)  # [T, hd, hd]
        g = prep.group_of_head
        per_head, grams = [], []
        for h in range(prep.n_heads):
            p = c.probs[h]  # [T, S]
            v, k = c.v[:, h], c.k[:, h]  # [S, hd]
            v_c = v[None] - (p @ v)[:, None]  # [T, S, hd]
            k_c = k[None] - (p @ k)[:, None]
            u_dev = _quad_norm(v_c, prep.o_gram[h])  # ‖u_s − ū_t‖  [T, S]
            qt = torch.einsum("tji,tsj->tsi", rot, k_c)  # R_tᵀ (k̃_s − k̄_t)
            qk = _quad_norm(qt, prep.wq_gram[h])  # ‖W_qᵀ R_tᵀ (k̃_s − k̄_t)‖
            cmat = torch.einsum("ts,tsi,tsj->tij", p, v_c, k_c)  # C_t  [T, hd, hd]
            side = cmat @ (rot @ prep.wq_factor[h])  # C_t R_t L
            grams.append(side.transpose(1, 2) @ prep.o_gram[h] @ side)
            kt = torch.einsum("sji,tj->tsi", rot, c.q[:, h])  # R_sᵀ q̃_t  [T, S, hd]
            per_head.append((u_dev, qk, _quad_norm(kt, prep.wk_gram[int(g[h])]), p))
        # λ_max of every head's and query's hd × hd Gram matrix in one batched Gram iteration.
        up, _ = spectral_upper_many(torch.cat(grams), rtol=1e-2)
        up = up.view(prep.n_heads, -1)
        terms = []
        for h, (u_dev, qk, kq, p) in enumerate(per_head):
            # Rounding in forming C_t and the Gram: far below 1e-10 of the same quantity bounded term by
            # term (Σ_s A_ts‖u_s − ū_t‖‖W_qᵀR_tᵀ(k̃_s − k̄_t)‖), which is added at that relative size.
            cross = torch.sqrt(up[h] * _NUDGE) * _NUDGE + 1e-10 * (p * u_dev * qk).sum(-1)
            terms.append(_HeadTerms(cross=cross, u_dev=u_dev, qk=qk, kq=kq))
        self.terms = terms

    def _weights(self, h: int, tm: _HeadTerms, eta: torch.Tensor):
        """For head h on the set: (ω, δp) with A_ts(Y) ≤ ω_ts and |A_ts(Y) − A_ts(x)| ≤ δp_ts."""
        prep, c = self.prep, self.c
        g = prep.group_of_head
        rg, sc = prep.rope_gain, prep.scaling
        mask = causal(eta.shape[0])
        zero = torch.zeros((), dtype=F64)
        dq = rg * float(prep.nq[h]) * eta
        dk = rg * float(prep.nk[int(g[h])]) * eta
        # Softmax ignores a common shift of a query's scores, so the query's own move only counts
        # through k̃_s − k̄_t: |z_ts(Y) − z_ts(x) − shift_t| ≤ sc·(‖W_qᵀR_tᵀ(k̃_s − k̄_t)‖η_t
        # + ‖W_kᵀR_sᵀq̃_t‖η_s + rg²‖W_q‖‖W_k‖η_tη_s).
        dz = sc * (tm.qk * eta[:, None] + tm.kq * eta[None, :] + dq[:, None] * dk[None, :])
        dz = torch.where(mask, dz, zero) * _NUDGE
        shift = dz.amax(dim=-1, keepdim=True)
        p = c.probs[h]
        omega = torch.where(mask, torch.clamp(p * torch.exp(dz + shift), max=1.0), zero) * _NUDGE
        dp = torch.where(mask, torch.maximum(omega - p, p * (1 - torch.exp(-dz - shift))), zero) * _NUDGE
        return omega, dp

    def _n_val(self, h: int) -> float:
        return float(self.prep.n_ov[h])  # ‖W_o^h W_v‖: how far u_s = W_o^h v_s moves per unit move of n_s

    def displacement(self, eta: torch.Tensor) -> torch.Tensor:
        """Per head and query, a bound on ‖u-space move of o_t^h‖ = ‖Σ_s A'_s u'_s − Σ_s A_s u_s‖ ([H, T]).

        Σ_s A'_s (u'_s − u_s) + Σ_s (A'_s − A_s)(u_s − ū_t): at most E_{A'}[‖W_o W_v‖η_s] + Σ_s δp_s‖u_s − ū_t‖.
        """
        t_len = eta.shape[0]
        mask = causal(t_len)
        zero = torch.zeros((), dtype=F64)
        out = []
        for h, tm in enumerate(self.terms):
            omega, dp = self._weights(h, tm, eta)
            moved = lp_max(torch.where(mask, (self._n_val(h) * eta)[None, :].expand(t_len, t_len), zero), omega)
            out.append(moved + (dp * tm.u_dev).sum(-1) * _NUDGE)
        return torch.stack(out)

    def bound(self, kap: torch.Tensor, eta: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per head and query, bounds on the value part and the softmax part of ‖W_o^h (J δ)_t^h‖ ([H, T] each)."""
        prep = self.prep
        t_len = kap.shape[0]
        g = prep.group_of_head
        rg, sc = prep.rope_gain, prep.scaling
        mask = causal(t_len)
        zero = torch.zeros((), dtype=F64)
        nu = kap * mu
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
            values.append(n_val * e_nu)
            softs.append(soft_q + soft_k)
        return torch.stack(values), torch.stack(softs)


def attention_bound(geo: AttentionGeometry, kap: torch.Tensor, eta: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Per query token t: sup over Y in the set and ‖δ_s‖ ≤ μ_s of ‖(J_attn(Y) δ)_t‖, [T] (heads added up)."""
    value, soft = geo.bound(kap, eta, mu)
    return (value + soft).sum(0) * _NUDGE


def attention_displacement(geo: AttentionGeometry, eta: torch.Tensor) -> torch.Tensor:
    """Per query t, sup over Y in the set of ‖Attn_t(Y) − Attn_t(x)‖, directly (not through the Jacobian), [T]."""
    return geo.displacement(eta).sum(0) * _NUDGE


def attention_bound_global(prep: PreparedBlock) -> float:
    """The same bound over all inputs: n(y) anywhere in the ball of radius √d, κ = 1/√eps, any A.

    With no center to expand around, each softmax part is bounded by Cauchy–Schwarz,
    ‖Cov(dz, u)‖ ≤ sd(dz)·max_s‖u_s − c‖, with everything at its largest on the image of the norm layer.
    """
    g = prep.group_of_head
    kap = kappa_global(prep.norm1)
    rd = math.sqrt(prep.d)
    rg = prep.rope_gain
    nq, nk, nv = prep.nq, prep.nk[g], prep.nv[g]
    bq, bk = prep.bq.norm(dim=-1), prep.bk.norm(dim=-1)[g]
    q_up = rg * (bq + nq * rd)
    # Keys lie in a ball of radius k_rad around one point; rotation moves the bias, so then it counts too.
    k_rad = rg * (bk + nk * rd) if prep.rope_cos is not None else nk * rd
    sd = prep.scaling * kap * rg * (nq * k_rad + q_up * nk)
    soft_out = sd * prep.n_ov * rd  # ‖W_o^h(v_s − c)‖ ≤ ‖W_o^h W_v‖√d
    soft_pre = sd * nv * rd
    per_head = float((prep.n_ov * kap + soft_out).sum())
    whole = prep.n_o * float((nv * kap + soft_pre).pow(2).sum().sqrt())
    return min(per_head, whole) * _NUDGE
