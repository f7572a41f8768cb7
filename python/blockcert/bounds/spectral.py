"""Guaranteed upper bounds on spectral norms (Gram iteration in float64 with its rounding bounded), and the
power-iteration estimate, which is only a lower estimate.

Why not power iteration: it converges to σ_max from below and never says how far it is; a bound that
must hold cannot use it. Gram iteration squares the matrix repeatedly (G ← GᵀG, rescaled): after k
squarings ‖G_k‖_F^{1/2^k} ≥ σ_max(A), and the overestimate is at most rank^{1/2^{k+1}}, so the bound
tightens doubly exponentially. Each float64 product is off by at most γ_m·|G|ᵀ|G| elementwise
(Higham, Accuracy and Stability, Thm 3.1/§3.5; holds for any summation order and with FMA), hence by at
most γ_m·‖G‖_F² in spectral norm; that term is added back at every level while the square roots are
unwound, each level nudged up past its own float rounding. The result is a float that is ≥ σ_max(A)
for the matrix whose float64 entries were passed in.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import torch

from blockcert.core.exact import float_up

_U = Fraction(1, 2**53)  # unit roundoff of float64
# An absolute allowance for gradual underflow: each entry of a rescaled product may lose up to the
# smallest subnormal. Far below anything that matters, kept so the bound holds in that corner too.
_TINY = Fraction(1, 2**1000)
# Entries below this (relative to a largest entry near 1) are set to zero after each rescaling: repeated
# squaring drives the small directions into subnormal numbers, whose arithmetic is ~50x slower on CPUs.
# Flushing them changes the matrix by at most numel·_FLUSH in Frobenius norm, which is added back.
_FLUSH_EXP = -400
_FLUSH = Fraction(1, 2**-_FLUSH_EXP)


def gamma(n: int) -> Fraction:
    """γ_n = n·u / (1 − n·u): the relative error bound of an n-term float64 dot product."""
    nu = n * _U
    if nu >= 1:
        raise ValueError(f"dimension {n} too large for the float64 error bound")
    return nu / (1 - nu)


@cache
def gamma_up(n: int) -> float:
    """A float ≥ γ_n."""
    return float_up(gamma(n))


@cache
def grow(n: int) -> float:
    """The float factor F = fl↑(1 + γ_{n+1}) that makes a computed nonnegative value an upper bound again.

    Use: x̂ is computed from nonnegative leaves that are themselves upper bounds (or exact) by monotone
    operations (+, ×, √, min, max, and divisions by exact positive constants), and no leaf-to-root path passes
    more than n float64 roundings. Each rounding of a nonnegative result is ≥ (exact)(1 − u), so
    x̂ ≥ x·(1 − u)^n, and fl(x̂·F) ≥ x(1 − u)^{n+1}/(1 − (n+1)u) ≥ x, the exact value of the same expression.
    (Sums of k terms count k − 1 roundings along every path, in any summation order: Higham Lemma 3.1/3.3.)
    """
    return float_up(1 + gamma(n + 1))


@cache
def shrink(n: int) -> float:
    """The float factor fl↓(1 − γ_{n+1}): for a nonnegative value computed with ≤ n roundings along every path
    from exact leaves, fl(x̂·shrink(n)) ≤ x (the mirror of `grow`, for lower bounds)."""
    q = 1 - gamma(n + 1)
    f = float(q)
    return f if Fraction(f) <= q else math.nextafter(f, 0.0)


def sqrt_up(q: Fraction, bits: int = 80) -> Fraction:
    """A dyadic rational s ≥ √q, within 2^-bits relative (q ≥ 0)."""
    if q < 0:
        raise ValueError("sqrt of a negative number")
    if q == 0:
        return Fraction(0)
    # Scale q to an integer with ≥ 2·bits significant bits, take the integer square root, round up.
    e = max(0, 2 * bits - (q.numerator.bit_length() - q.denominator.bit_length()))
    e += e % 2
    scaled = q * (1 << e)
    n = -((-scaled.numerator) // scaled.denominator)  # ceil
    r = math.isqrt(n)
    if r * r < n:
        r += 1
    return Fraction(r, 1 << (e // 2))


def frobenius_sq_upper(a: torch.Tensor) -> Fraction:
    """An upper bound on ‖a‖_F² (float64 entries), covering the rounding of the float sum of squares."""
    n = a.numel()
    if n == 0:
        return Fraction(0)
    s = float((a * a).sum())
    if not math.isfinite(s):
        raise ValueError("non-finite matrix entries")
    # Each square rounds once (u) and the sum of n terms by γ_n: |ŝ − s| ≤ γ_{n+1}·s, so s ≤ ŝ/(1 − γ_{n+1}).
    return Fraction(s) / (1 - gamma(n + 1)) + n * _TINY


def spectral_upper(a: torch.Tensor, max_steps: int = 12, rtol: float = 1e-3) -> float:
    """A float ≥ σ_max(a) for a 2-D tensor (converted to float64; float32/bf16 inputs convert exactly).

    Stops early once the bound is within `rtol` of a Rayleigh-quotient lower estimate (that estimate
    only decides when to stop; the returned number never depends on it being right).
    """
    if a.dim() != 2:
        raise ValueError("spectral_upper expects a matrix")
    if a.numel() == 0:
        return 0.0
    return float(spectral_upper_many(a[None], max_steps, rtol)[0][0])


def _flushed(g: torch.Tensor) -> torch.Tensor:
    return torch.where(g.abs() < 2.0**_FLUSH_EXP, torch.zeros((), dtype=g.dtype), g)


def product_upper(x: torch.Tensor, y: torch.Tensor, roundings: int = 0) -> float:
    """A float ≥ ‖x·y‖₂ where the product is formed in float64 here.

    `roundings` counts extra elementwise float64 roundings already in `x` (e.g. x = fl(W·diag(α))): a
    product of computed factors is then within γ_{m+roundings}·‖x‖_F‖y‖_F of the exact one.
    """
    x64, y64 = x.detach().to(torch.float64), y.detach().to(torch.float64)
    prod = x64 @ y64
    err = gamma(x64.shape[1] + roundings) * sqrt_up(frobenius_sq_upper(x64)) * sqrt_up(frobenius_sq_upper(y64))
    return float_up(Fraction(spectral_upper(prod)) + err)


def psd_factor(w: torch.Tensor) -> torch.Tensor:
    """L with L·Lᵀ ⪰ W Wᵀ (w: [n, d] float64, exact), by Cholesky of fl(W Wᵀ) + τI.

    Two roundings separate L̂L̂ᵀ from W Wᵀ. Forming the Gram matrix: |fl(WWᵀ) − WWᵀ| ≤ γ_d |W||W|ᵀ
    elementwise (inner dimension d, not n), so in spectral norm ≤ γ_d‖ |W| ‖_F² = γ_d‖W‖_F². Cholesky of
    A = fl(WWᵀ) + τI: L̂L̂ᵀ = A + E with ‖E‖₂ ≤ γ_{n+1}‖L̂‖_F² (Higham Thm 10.3) and ‖L̂‖_F² = tr(A)(1 + O(γ)).
    With F = ‖W‖_F² and tr(A) ≤ (1 + γ_d)F + nτ, τ = 2γ_d·F + 4γ_{n+1}·(2F + 1e-300) (for nγ_{n+1} ≤ 1/8)
    makes τI + E − (fl(WWᵀ) − WWᵀ) ⪰ 0, i.e. L̂L̂ᵀ ⪰ WWᵀ. The γ of the Gram term is that of its inner dimension d
    (a d-term dot product per entry; the head dimension n is the Cholesky's): for W_q^h [hd, d] that is d. The
    diagonal's own rounding in fl(fl(WWᵀ) + τ), ≤ u(F(1 + γ_d) + τ), and float(F)'s are inside the factor 2.
    """
    n, d = w.shape
    f = float(frobenius_sq_upper(w))
    if n * float(gamma(n + 1)) > 0.125:
        raise ValueError(f"psd_factor: n = {n} too large for the rounding allowance")
    tau = 2 * float(gamma(d)) * f + 4 * float(gamma(n + 1)) * (2 * f + 1e-300)
    return torch.linalg.cholesky(w @ w.T + tau * torch.eye(n, dtype=torch.float64))


def power_lower(a: torch.Tensor, iters: int = 50, seed: int = 0) -> float:
    """Power-iteration estimate of σ_max(a): a LOWER estimate (‖a·v‖ for a unit v), never an upper bound."""
    g = a.detach().to(torch.float64)
    if g.numel() == 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(g.shape[1], generator=gen, dtype=torch.float64)
    v = v / v.norm()
    best = 0.0
    for _ in range(iters):
        w = g @ v
        best = max(best, float(w.norm()))
        v = g.T @ w
        n = v.norm()
        if float(n) == 0.0:
            break
        v = v / n
    return best


def scaled_spectral_upper(w: torch.Tensor, col_scale: torch.Tensor | None = None,
                          row_scale: torch.Tensor | None = None) -> float:
    """A float ≥ ‖diag(row_scale)·w·diag(col_scale)‖₂, the scaled matrix being formed in float64 here.

    Each entry of the formed matrix carries at most two roundings (γ_2 relative), so the exact scaled
    matrix is within γ_2·‖formed‖_F of it in spectral norm.
    """
    m = w.detach().to(torch.float64)
    if col_scale is not None:
        m = m * col_scale.to(torch.float64)[None, :]
    if row_scale is not None:
        m = m * row_scale.to(torch.float64)[:, None]
    slack = gamma(2) / (1 - gamma(2)) * sqrt_up(frobenius_sq_upper(m))
    return float_up(Fraction(spectral_upper(m)) + slack)


def spectral_upper_many(
    mats: torch.Tensor,
    max_steps: int = 12,
    rtol: float = 1e-3,
    enough=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper bounds (and Rayleigh lower estimates) of σ_max for a batch [B, r, c] of matrices.

    The same rigorous Gram iteration as `spectral_upper`, batched, with the unwinding done in float64
    (vectorised) instead of rationals: every add, multiply and square root there acts on nonnegative
    numbers and is off by at most u = 2^-53 relative, so nudging each level up by (1 + 1e-12) ≫ 4u keeps
    the result an upper bound. `enough(idx, upper, lower)`, if given, may return a mask (by position in
    `idx`) of matrices whose current upper bound already suffices for the caller; they stop refining.
    Every returned upper bound is rigorous whatever `enough` says: it only trades tightness for time.
    Returns float64 tensors (upper, lower); lower is an estimate only.
    """
    g = mats.detach().to(torch.float64)
    if g.shape[1] < g.shape[2]:
        g = g.transpose(1, 2)
    b = g.shape[0]
    upper = torch.zeros(b, dtype=torch.float64)
    lower = torch.zeros(b, dtype=torch.float64)
    if b == 0:
        return upper, lower
    if not bool(torch.isfinite(g).all()):
        raise ValueError("non-finite matrix entries")
    amax = g.abs().amax(dim=(1, 2))
    live = torch.nonzero(amax > 0).flatten()
    if live.numel() == 0:
        return upper, lower
    s0 = torch.frexp(amax[live])[1].to(torch.int64)
    g = _flushed(torch.ldexp(g[live], -s0[:, None, None]))
    idx = live
    log_scale = s0.to(torch.float64)  # log2 σ(A) = (log2 σ(G_k) + log_scale) / 2^k
    # Per level, for the matrices still live: (2^s scale, γ_inner, ‖G_k‖_F² upper bound), as tensors.
    levels: list[tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]] = []
    numel = g.shape[1] * g.shape[2]
    flush = float((_FLUSH + _TINY) * numel) * (1 + 1e-12)
    for step in range(max_steps + 1):
        fsq = _frob_sq_upper_many(g)
        ups = _unwind_many(fsq, levels, idx, s0, flush)
        k = len(levels)
        if k >= 1:
            col = g[torch.arange(g.shape[0]), :, g.norm(dim=1).argmax(dim=1)]
            ray = torch.einsum("bi,bij,bj->b", col, g, col) / (col * col).sum(-1)
            low = torch.exp2((torch.log2(torch.clamp(ray, min=1e-300)) + log_scale) / 2**k) * (1 - 1e-9)
            fro = g.flatten(1).norm(dim=1)
            done = (fro / torch.clamp(ray, min=1e-300)) ** (1.0 / 2**k) <= 1 + rtol
        else:
            low = torch.zeros(g.shape[0], dtype=torch.float64)
            done = torch.zeros(g.shape[0], dtype=torch.bool)
        upper[idx], lower[idx] = ups, torch.maximum(lower[idx], low)
        if enough is not None:
            done = done | enough(idx, ups, lower[idx])
        if step == max_steps or bool(done.all()):
            break
        keep = ~done
        g, idx, s0, log_scale, fsq = g[keep], idx[keep], s0[keep], log_scale[keep], fsq[keep]
        levels = [(s[keep], gam, f[keep], ids[keep]) for s, gam, f, ids in levels]
        p = g.transpose(1, 2) @ g
        pmax = p.abs().amax(dim=(1, 2))
        if not bool((pmax > 0).all()):  # underflow to zero: the bounds of the previous level stand
            break
        s = torch.frexp(pmax)[1].to(torch.int64)
        levels.append((s, float(gamma(g.shape[1])) * (1 + 1e-12), fsq, idx))
        g = _flushed(torch.ldexp(p, -s[:, None, None]))
        log_scale = 2 * log_scale + s.to(torch.float64)
    return upper, lower


def _frob_sq_upper_many(g: torch.Tensor) -> torch.Tensor:
    n = g.shape[1] * g.shape[2]
    return (g * g).sum(dim=(1, 2)) * float(1 / (1 - gamma(n + 1))) * (1 + 1e-12) + 1e-300


_NUDGE = 1 + 1e-12


def _unwind_many(fsq_last, levels, idx, s0, flush) -> torch.Tensor:
    # σ(G_k)² ≤ 2^{s_k}·(σ(G_{k+1}) + flush) + γ·‖G_k‖_F²; each level nudged up past its float rounding.
    u = torch.sqrt(fsq_last) * _NUDGE
    for s, gam, fsq, _ in reversed(levels):
        u = torch.sqrt((torch.ldexp(u + flush, s) + gam * fsq + 1e-300) * _NUDGE) * _NUDGE
    return torch.ldexp((u + flush) * _NUDGE, s0)
