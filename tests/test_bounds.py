"""Lipschitz bounds (issue 5): every sound bound is checked against the true Jacobian at random points of its set,
the exact-rational composition against a brute-force recomputation, and `blockcert bound` end to end.

The distance is dist(X, Y) = max_t ‖X_t − Y_t‖₂. For a map acting token by token its operator norm in this
distance is max_t ‖J_tt‖₂, computed exactly here; for maps that mix tokens (attention, whole blocks) the
exact value is out of reach, but ‖J_t·‖₂ (the spectral norm of row block t, exact) and any feasible
direction are lower bounds of it, so a sound bound must be at least both.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import mpmath
import pytest
import torch

from blockcert.bounds import activations as act_mod
from blockcert.bounds import block as block_mod
from blockcert.bounds.attention import (
    AttentionGeometry,
    attention_bound,
    attention_center,
    attention_displacement,
    lp_max,
)
from blockcert.bounds.block import ball, local_bound, segment_cover
from blockcert.bounds.empirical import jacobian_norm_lower
from blockcert.bounds.norm import eta, kappa, normalise, radial
from blockcert.bounds.pointwise import Enclosure, pointwise_ratios, run_block_enclosed
from blockcert.bounds.spectral import power_lower, spectral_upper, spectral_upper_many
from blockcert.bounds.weights import NormParams, prepare_block
from blockcert.core import exact
from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR
from blockcert.errors import BlockCertError
from blockcert.records.bound import BOUND_FILE, BOUND_PLOT, BOUND_TABLE, KINDS, BoundArtifact
from blockcert.store.files import sha256_file
from blockcert.surrogates import derive_named
from blockcert.workflows.bound import check_sound

from .conftest import error_lines

F64 = torch.float64
T_LEN = 5  # tokens of the tiny test prompts: full Jacobians are (5·64)² entries


# ---------------------------------------------------------------- fixtures


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def toy_irs(toy_models) -> dict[str, list[BlockIR]]:
    """bf16 surrogate IRs of every block of two toy families (GQA + RoPE Llama, GPT-2), in float64."""
    from blockcert.arch.loading import load_model
    from blockcert.arch.native import NativeModel

    out = {}
    for variant in ("llama-gqa", "gpt2"):
        native = NativeModel(load_model(str(toy_models[variant])))
        out[variant] = [derive_named(native.extract_ir(i), "bf16").to(dtype=F64) for i in range(len(native.layers))]
    return out


def _with(ir: BlockIR, **zeroed: bool) -> BlockIR:
    """The IR with its attention output (attn=True) or its MLP output (mlp=True) set to zero."""
    ts = dict(ir.tensors)
    for name, off in zeroed.items():
        if off:
            key = "attn.o" if name == "attn" else "mlp.down"
            ts[f"{key}.weight"] = torch.zeros_like(ts[f"{key}.weight"])
            if f"{key}.bias" in ts:
                ts[f"{key}.bias"] = torch.zeros_like(ts[f"{key}.bias"])
    return BlockIR(ir.spec, ts)


def _block_fn(ir: BlockIR):
    valid = torch.ones(1, T_LEN, dtype=torch.bool)
    pos = torch.arange(T_LEN)[None]
    return lambda x: run_block(ir, x[None], valid, pos)[0]


def _jacobian(fn, y: torch.Tensor) -> torch.Tensor:
    """[T, d, T, d]: J[t, :, s, :] = ∂f(y)_t / ∂y_s, exactly (float64 autograd)."""
    return torch.autograd.functional.jacobian(fn, y, vectorize=True)


def _row_norms(jac: torch.Tensor) -> torch.Tensor:
    """‖J_t·‖₂ per output token: exact lower bounds of each row's operator norm in the max-token distance."""
    t, d = jac.shape[0], jac.shape[1]
    return torch.stack([torch.linalg.matrix_norm(jac[i].reshape(d, t * d), ord=2) for i in range(t)])


def _ascent(jac: torch.Tensor, restarts: int = 4, iters: int = 30) -> torch.Tensor:
    """Per output token, the alternating ascent for sup_{‖v_s‖≤1} ‖Σ_s J_ts v_s‖ (feasible: a lower bound)."""
    gen = torch.Generator().manual_seed(1)
    best = torch.zeros(jac.shape[0], dtype=F64)
    for _ in range(restarts):
        w = torch.randn(jac.shape[0], jac.shape[1], generator=gen, dtype=F64)  # one w per output token
        for _ in range(iters):
            g = torch.einsum("ta,tasb->tsb", w, jac)
            v = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            out = torch.einsum("tasb,tsb->ta", jac, v)
            best = torch.maximum(best, out.norm(dim=-1))
            w = out / out.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return best


def _prompt(seed: int, d: int, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(T_LEN, d, generator=gen, dtype=F64) * scale / math.sqrt(d) * (1 + torch.rand(T_LEN, 1,
                                                                                                   generator=gen))


def _in_boxes(center: torch.Tensor, radii: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random point with ‖Y_t − center_t‖ ≤ radii_t (often on the boundary, where bounds are tightest)."""
    u = torch.randn(center.shape, generator=gen, dtype=F64)
    u = u / u.norm(dim=-1, keepdim=True)
    scale = torch.where(torch.rand(center.shape[0], generator=gen) < 0.5, 1.0,
                        torch.rand(center.shape[0], generator=gen, dtype=F64))
    return center + u * (radii * scale)[:, None]


# ---------------------------------------------------------------- exact.py


def test_exact_global_bound_equals_brute_force():
    rng = random.Random(5)
    for n in (0, 1, 2, 7, 30):
        eps = [exact.to_fraction(rng.random() * 10 ** rng.randint(-6, 1)) for _ in range(n)]
        lips = [exact.to_fraction(rng.random() * 10 ** rng.randint(0, 6)) for _ in range(n)]
        brute = sum((eps[i] * math.prod(lips[i + 1 :], start=Fraction(1)) for i in range(n)), Fraction(0))
        assert exact.global_bound(eps, lips) == brute
        prefix = exact.prefix_bounds(eps, lips)
        for k in range(1, n + 1):
            assert prefix[k - 1] == exact.global_bound(eps[:k], lips[:k])


def test_exact_rounding_is_outward_and_exact():
    assert exact.to_fraction(0.1) == Fraction(3602879701896397, 36028797018963968)  # the float, not 1/10
    q = Fraction(123456789, 1000)
    assert exact.round_up(q, 0) == 123457 and exact.round_down(q, 0) == 123456
    assert exact.round_up(q, 3) == q and exact.round_up(q, 2) == Fraction(12345679, 100)
    assert exact.round_up(Fraction(1, 3), 3) == Fraction(334, 1000)
    assert exact.round_up_sig(Fraction(10) ** 400 + 1, 3) == Fraction(101) * Fraction(10) ** 398
    assert exact.round_up_sig(Fraction(1000), 1) == 1000  # a power of ten stays itself
    assert exact.decimal_str(exact.round_up(Fraction(1, 3), 4)) == "0.3334"
    assert exact.decimal_str(Fraction(-5, 4)) == "-1.25" and exact.decimal_str(Fraction(7)) == "7"
    with pytest.raises(ValueError):
        exact.decimal_str(Fraction(1, 3))
    for q in (Fraction(1, 3), Fraction(10) ** 30 + Fraction(1, 7), Fraction(2, 10**320)):
        assert Fraction(exact.float_up(q)) >= q
    assert exact.float_up(Fraction(10) ** 400) == math.inf
    with pytest.raises(ValueError):
        exact.to_fraction(math.nan)
    with pytest.raises(ValueError):
        exact.global_bound([Fraction(1)], [Fraction(-1)])


# ---------------------------------------------------------------- spectral norms


def _sigma_exact(a: torch.Tensor) -> mpmath.mpf:
    """σ_max of the float64 matrix a, exactly for our purposes (mpmath SVD at 200 bits: error ~1e-60)."""
    with mpmath.workprec(200):
        return max(mpmath.svd_r(mpmath.matrix(a.tolist()), compute_uv=False))


def _near_rank_one(shape: tuple[int, int], seed: int, noise: float) -> torch.Tensor:
    """u vᵀ plus a little noise: a separated top singular value, so Gram iteration converges to the last ulps and
    the bound's only excess is its rounding allowance (~1e-12): a missing or mis-sized allowance is visible."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(shape[0], 1, generator=gen, dtype=F64)
    v = torch.randn(1, shape[1], generator=gen, dtype=F64)
    return u @ v + noise * torch.randn(*shape, generator=gen, dtype=F64)


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (5, 5), (1, 9)])
@pytest.mark.parametrize("scale", [2.0**-500, 1.0, 2.0**500])  # powers of two: the exact σ scales exactly
def test_spectral_upper_against_the_exact_singular_value(shape, scale):
    """σ ≤ bound ≤ σ·(1 + 1e-10) against mpmath's σ of the same float64 matrix. The allowances (γ per Gram level,
    1 + 1e-12 per unwinding step) total ~4e-12 here, so the upper side catches an allowance inflated past
    1e-10 and the lower side any allowance that is missing (see the mutation test below)."""
    for seed, noise in enumerate((0.0, 1e-3, 0.3)):
        a = _near_rank_one(shape, seed, noise) * scale
        sigma = _sigma_exact(a)
        up = spectral_upper(a, rtol=0.0)  # run every Gram level: the result converges to σ plus its allowance
        assert sigma <= mpmath.mpf(up) <= sigma * (1 + mpmath.mpf(1e-10)), (seed, float(mpmath.mpf(up) / sigma - 1))
        assert power_lower(a) <= float(sigma) * (1 + 1e-15)  # the estimate is a lower one (to its last ulp)


@pytest.mark.parametrize("shape", [(64, 64), (96, 40)])
def test_spectral_upper_on_wider_matrices(shape):
    """Gaussian matrices (top singular gap of a few %): at the default rtol the bound is within rtol = 1e-3 of σ by
    design (only the stopping rule decides that); with rtol = 0 all 12 levels run and the excess falls to the
    allowance (~1e-11; float64 SVD, itself accurate to ~n·u = 1e-14 relative, is the reference)."""
    gen = torch.Generator().manual_seed(shape[0])
    a = torch.randn(*shape, generator=gen, dtype=F64)
    true = float(torch.linalg.matrix_norm(a, ord=2))
    assert true * (1 - 1e-13) <= spectral_upper(a) <= true * (1 + 1e-3)
    assert true * (1 - 1e-13) <= spectral_upper(a, rtol=0.0) <= true * (1 + 1e-9)


def test_spectral_allowances_are_needed_mutation():
    """Mutation check: with every rounding allowance of the Gram iteration removed (γ of each product, the
    Frobenius sums' γ and the unwinding's 1 + 1e-12 nudges), the bound falls below the exact σ on some near
    rank-one matrices: rounding really does push the computed Gram iterates under the exact ones, and the test
    above would fail on a missing allowance."""
    from blockcert.bounds import spectral

    mats = [_near_rank_one(shape, seed, 1e-3) for seed in range(10) for shape in ((7, 3), (5, 5))]
    sigmas = [_sigma_exact(a) for a in mats]
    assert all(mpmath.mpf(spectral_upper(a, rtol=0.0)) >= s for a, s in zip(mats, sigmas, strict=True))
    patch = pytest.MonkeyPatch()
    try:
        patch.setattr(spectral, "_NUDGE", 1.0)
        patch.setattr(spectral, "gamma", lambda n: Fraction(0))
        patch.setattr(spectral, "_frob_sq_upper_many", lambda g: (g * g).sum(dim=(1, 2)))
        below = sum(mpmath.mpf(spectral_upper(a, rtol=0.0)) < s for a, s in zip(mats, sigmas, strict=True))
    finally:
        patch.undo()
    assert below >= 2, below


def test_product_upper_covers_cancellation_in_the_formed_product():
    """x·y = 1 exactly, but float64 forms (1e16 + 1) − 1e16 = 0: only the γ_m‖x‖_F‖y‖_F term (≈ 8 here) keeps the
    bound ≥ 1. Mutation: without it (γ → 0) the bound is 0, below the exact norm."""
    from blockcert.bounds import spectral

    x = torch.tensor([[1.0, 1.0, 1.0]], dtype=F64)
    y = torch.tensor([[1e16], [1.0], [-1e16]], dtype=F64)
    assert float((x @ y)[0, 0]) == 0.0  # the cancellation happens
    up = spectral.product_upper(x, y)
    assert 1.0 <= up <= 20.0  # γ_3·‖x‖_F‖y‖_F = 3.3e-16·1.73·1.41e16 ≈ 8.2, plus its own rounding
    patch = pytest.MonkeyPatch()
    try:
        patch.setattr(spectral, "gamma", lambda n: Fraction(0))
        assert spectral.product_upper(x, y) < 1.0
    finally:
        patch.undo()


def test_spectral_upper_many_rank_one_zero_and_equal_singular_values():
    """Exactly rank-one (u vᵀ formed in float64), zero and 3·I: against the exact σ, tight to the allowance."""
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(30, 1, generator=gen, dtype=F64), torch.randn(1, 20, generator=gen, dtype=F64)
    mats = torch.stack([torch.zeros(30, 20, dtype=F64), u @ v, torch.eye(30, 20, dtype=F64) * 3])
    up, low = spectral_upper_many(mats, rtol=0.0)
    assert float(up[0]) == 0.0 and float(low[0]) == 0.0
    for i, rel in ((1, 1e-10), (2, 4e-4)):  # 20 equal singular values: excess ≤ 20^(1/2^13) − 1 = 3.7e-4 by design
        sigma = _sigma_exact(mats[i])
        assert sigma <= mpmath.mpf(float(up[i])) <= sigma * (1 + mpmath.mpf(rel))
        assert mpmath.mpf(float(low[i])) <= sigma


# ---------------------------------------------------------------- activations and norms


@pytest.mark.parametrize("name", ["silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"])
def test_activation_ranges_contain_every_value(name):
    gen = torch.Generator().manual_seed(3)
    lo = torch.randn(400, generator=gen, dtype=F64) * 4
    hi = lo + torch.rand(400, generator=gen, dtype=F64) * torch.tensor([0.01, 1.0, 8.0], dtype=F64).repeat(134)[:400]
    a_lo, a_hi = act_mod.act_range(name, lo, hi)
    d_lo, d_hi = act_mod.act_prime_range(name, lo, hi)
    for frac in torch.linspace(0, 1, 41, dtype=F64):
        x = lo + frac * (hi - lo)
        assert bool((act_mod.act(name, x) >= a_lo).all() and (act_mod.act(name, x) <= a_hi).all())
        assert bool((act_mod.act_prime(name, x) >= d_lo).all() and (act_mod.act_prime(name, x) <= d_hi).all())
    grid = torch.linspace(-12, 12, 200001, dtype=F64)
    assert float(act_mod.act_prime(name, grid).abs().max()) <= act_mod.act_prime_sup(name)


def test_activation_critical_points_are_the_known_ones():
    _, neg_c, pos_c = act_mod.critical_points("gelu")
    assert abs(pos_c - math.sqrt(2)) < 1e-7 and abs(neg_c + math.sqrt(2)) < 1e-7  # gelu'' = φ(x)(2 − x²)
    _, neg_c, pos_c = act_mod.critical_points("silu")
    assert abs(pos_c * math.tanh(pos_c / 2) - 2) < 1e-7 and abs(neg_c + pos_c) < 1e-7  # x·tanh(x/2) = 2


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_jacobian_bound_on_the_ball(kind):
    p = NormParams(kind, 1e-5)
    d = 32
    gen = torch.Generator().manual_seed(7)
    for _ in range(20):
        x = torch.randn(d, generator=gen, dtype=F64) * (0.05 + 3 * torch.rand(1, generator=gen, dtype=F64))
        rho = float(radial(kind, x[None])) * float(torch.rand(1, generator=gen)) * 0.99
        rho_t = torch.tensor([rho], dtype=F64)
        k = kappa(p, radial(kind, x[None]), rho_t, d)
        e = eta(k, rho_t, d)
        for _ in range(5):
            y = _in_boxes(x[None], rho_t, gen)[0]
            jac = torch.autograd.functional.jacobian(lambda v: normalise(p, v), y)
            assert float(torch.linalg.matrix_norm(jac, ord=2)) <= float(k) * (1 + 1e-12)
            assert float((normalise(p, y) - normalise(p, x)).norm()) <= float(e) * (1 + 1e-12)


def test_lp_max_is_the_maximum_over_the_capped_simplex():
    gen = torch.Generator().manual_seed(2)
    f = torch.rand(50, 6, generator=gen, dtype=F64)
    omega = torch.rand(50, 6, generator=gen, dtype=F64) * 0.6 + 0.1
    omega = omega / omega.sum(-1, keepdim=True) * 1.7  # Σ ω ≥ 1
    best = lp_max(f, omega)
    for _ in range(200):  # random feasible points never beat it
        p = torch.minimum(omega, torch.rand(50, 6, generator=gen, dtype=F64) * omega)
        p = p / p.sum(-1, keepdim=True)
        feasible = (p <= omega + 1e-12).all(-1)
        assert bool(((p * f).sum(-1) <= best + 1e-12)[feasible].all())


# ---------------------------------------------------------------- sublayers and blocks vs true Jacobians


def _sets(x: torch.Tensor, seed: int, radius_scale: float):
    """A segment cover (traced x to a nearby 'stitched' x̂) and a max-token ball, for one tiny prompt."""
    gen = torch.Generator().manual_seed(seed)
    x_hat = x + torch.randn(x.shape, generator=gen, dtype=F64) * radius_scale / math.sqrt(x.shape[1])
    pos = torch.arange(T_LEN)
    rho = float(radial("rms", x).min()) * 0.3
    return [segment_cover(x, x_hat, pos, 3), ball(x, rho, pos)]


def _points(nb, gen, n: int):
    k = len(nb.centers)
    return [_in_boxes(nb.centers[j % k], nb.radii[j % k], gen) for j in range(n)]


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_attention_bound_never_below_the_true_jacobian(toy_irs, variant):
    ir = toy_irs[variant][1]
    attn_only = _with(ir, mlp=True)  # block(Y) = Y + Attn(N1(Y)): its Jacobian minus I is the attention's
    prep = prepare_block(ir)
    fn = _block_fn(attn_only)
    gen = torch.Generator().manual_seed(11)
    for seed in range(2):
        x = _prompt(seed, prep.d)
        for nb in _sets(x, seed, radius_scale=0.3):
            for center, rho in zip(nb.centers, nb.radii, strict=True):
                rad = radial(prep.norm1.kind, center)
                k1 = kappa(prep.norm1, rad, rho, prep.d)
                e1 = eta(k1, rho, prep.d)
                c = attention_center(prep, normalise(prep.norm1, center), nb.positions)
                geo = AttentionGeometry(prep, c, nb.positions)
                a = attention_bound(geo, k1, e1, torch.ones_like(rho))
                moved = attention_displacement(geo, e1)
                base = fn(center) - center
                for y in [center] + [_in_boxes(center, rho, gen) for _ in range(3)]:
                    jac = _jacobian(fn, y) - torch.eye(T_LEN * prep.d, dtype=F64).view(T_LEN, prep.d, T_LEN, prep.d)
                    assert bool((_row_norms(jac) <= a * (1 + 1e-9)).all())
                    assert bool((_ascent(jac, restarts=1, iters=10) <= a * (1 + 1e-9)).all())
                    assert bool(((fn(y) - y - base).norm(dim=-1) <= moved * (1 + 1e-9) + 1e-12).all())


# The whole-block local bound on sets of 1e-4 relative size (a segment cover and a ball), where it is near its
# value at a point, against the best feasible direction found there. What is left is the method's own excess at
# a point, not the set's: the attention bound adds heads and softmax parts by the triangle inequality and the
# block multiplies (1 + m)(1 + a). Measured 11.1–11.4× (llama-gqa) and 7.6–7.7× (gpt2); the old test's sets
# (0.3 of the norms) had 130–900× on segments and 10⁶× on balls, where no soundness bug would show.
BLOCK_SLACK = {"llama-gqa": 13.0, "gpt2": 9.0}


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_block_local_bound_never_below_the_true_jacobian(toy_irs, variant):
    ir = toy_irs[variant][2]
    prep = prepare_block(ir)
    fn = _block_fn(ir)
    pos = torch.arange(T_LEN)
    gen = torch.Generator().manual_seed(13)
    x = _prompt(5, prep.d)
    x_hat = x + torch.randn(x.shape, generator=gen, dtype=F64) * 1e-4 / 8
    sets = [segment_cover(x, x_hat, pos, 3), ball(x, float(radial("rms", x).min()) * 1e-4, pos)]
    for nb in sets:
        lb = local_bound(prep, [nb])
        pts = [nb.centers[0]] + _points(nb, gen, 2)
        low = 0.0
        for y in pts:
            jac = _jacobian(fn, y)
            low = max(low, float(_row_norms(jac).max()), float(_ascent(jac, restarts=2, iters=15).max()))
        assert low <= lb.lipschitz <= low * BLOCK_SLACK[variant], (lb.lipschitz, low, lb.lipschitz / low)
        if len(nb.centers) == 1:  # a ball is convex: difference quotients of any two of its points
            for y, y2 in zip(pts, pts[1:] + pts[:1], strict=True):
                num = (fn(y) - fn(y2)).norm(dim=-1).max()
                den = (y - y2).norm(dim=-1).max()
                assert float(num) <= lb.lipschitz * float(den) * (1 + 1e-9)


def _mlp_sup_search(fn, x: torch.Tensor, rho: float, starts: int = 3, iters: int = 20) -> float:
    """sup over the max-token ball B(x, ρ) of max_t ‖J_tt(Y)‖₂ for a map acting token by token (an MLP-only
    block minus the identity), by projected gradient ascent on σ_max(J_tt) from the center and random starts.
    Every value it reports is attained, so it is a lower estimate of the quantity k_mlp claims to bound."""
    t_len, d = x.shape
    best = 0.0
    for start in range(starts):
        gen = torch.Generator().manual_seed(start)
        step = torch.randn(t_len, d, generator=gen, dtype=F64)
        y = x + (rho * step / step.norm(dim=-1, keepdim=True) * 0.5 if start else 0.0)
        for _ in range(iters):
            jac = torch.autograd.functional.jacobian(lambda v: (fn(v) - v).sum(0), y, vectorize=True)  # [d, T, d]
            blocks = jac.permute(1, 0, 2)  # J_tt: the map is block-diagonal, so the sum over t separates them
            u, sv, vh = torch.linalg.svd(blocks)
            best = max(best, float(sv[:, 0].max()))
            # d σ_t / dY_t = ∇ (u_tᵀ J_tt(Y) v_t): a Jacobian-vector product differentiated once more.
            yg = y.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(((fn(yg) - yg) * u[:, :, 0]).sum(), yg, create_graph=True)
            (asc,) = torch.autograd.grad((g * vh[:, 0, :]).sum(), yg)
            with torch.no_grad():
                y = y + 0.25 * rho * asc / asc.norm(dim=-1, keepdim=True).clamp_min(1e-300)
                off = y - x
                y = x + off * torch.clamp(rho / off.norm(dim=-1, keepdim=True).clamp_min(1e-300), max=1.0)
    return best


# The local MLP bound over balls of radius frac·min‖x_t‖ against the searched true sup. The excess is stated
# per radius: at a small ball it is ‖K‖ against ‖K·J_n‖ (the norm layer's Jacobian is 1/r times a projection
# that the bound ignores, ≈ 4–5 % here); it grows with the ball because the pre-activations are boxed
# coordinate by coordinate. Measured: 1.05 / 1.7 / 6.5 (llama-gqa), 1.05 / 1.6 / 2.7 (gpt2).
MLP_SLACK = {1e-3: 1.12, 0.05: 2.0, 0.3: 8.0}


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_local_mlp_bound_against_the_true_local_sup(toy_irs, variant):
    ir = _with(toy_irs[variant][0], attn=True)  # block(Y) = Y + MLP(N2(Y)), acting token by token
    prep = prepare_block(ir)
    fn = _block_fn(ir)
    x = _prompt(3, prep.d)
    pos = torch.arange(T_LEN)
    mutated = []
    for frac, slack in MLP_SLACK.items():
        rho = float(radial(prep.norm2.kind, x).min()) * frac
        k_mlp = local_bound(prep, [ball(x, rho, pos)]).k_mlp
        true = _mlp_sup_search(fn, x, rho)
        assert true <= k_mlp <= true * slack, (frac, k_mlp, true, k_mlp / true)
        if frac >= 0.05:
            # Mutation: without the radius part (how far K moves over the ball) the bound falls below the
            # searched sup on one of the two larger balls (llama-gqa at 0.05: 0.98×, gpt2 at 0.3: 0.73×): the
            # comparison is tight enough to see a missing term of this size.
            patch = pytest.MonkeyPatch()
            try:
                patch.setattr(block_mod, "split_bound", lambda prep, h: 0.0)
                mutated.append(local_bound(prep, [ball(x, rho, pos)]).k_mlp / true)
            finally:
                patch.undo()
    assert min(mutated) < 1.0, mutated


def test_empirical_estimate_is_a_lower_estimate(toy_irs):
    ir = toy_irs["llama-gqa"][1]
    prep = prepare_block(ir)
    x = _prompt(4, prep.d)
    jac = _jacobian(_block_fn(ir), x)
    block_sums = torch.stack([sum(torch.linalg.matrix_norm(jac[t, :, s, :], ord=2) for s in range(T_LEN))
                              for t in range(T_LEN)])  # ≥ the true operator norm of each row
    est = jacobian_norm_lower(ir, x[None], torch.ones(1, T_LEN, dtype=torch.bool), torch.arange(T_LEN)[None],
                              torch.tensor([[T_LEN - 1, 2]]), iters=10)
    assert 0 < float(est[0]) <= float(block_sums.max()) * (1 + 1e-9)
    local = local_bound(prep, [ball(x, 0.0, torch.arange(T_LEN))])
    assert float(est[0]) <= local.lipschitz


def _all_float64(ir: BlockIR) -> BlockIR:
    """The IR without its declared float32 norm / softmax steps, so that float64 inputs stay float64."""
    spec = ir.spec
    norms = {k: getattr(spec, k).model_copy(update={"compute_dtype": None}) for k in ("attn_norm", "mlp_norm")}
    attn = spec.attention.model_copy(update={"softmax_dtype": None})
    return BlockIR(spec.model_copy(update={**norms, "attention": attn}), ir.tensors)


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_block_enclosure_contains_the_block_on_every_sampled_input(toy_irs, variant):
    """The range arguments (norm layers by the mean-value inequality, softmax by monotonicity, activations by
    their exact range) on input boxes of width 1e-8: every sampled input's output must lie in the enclosure.
    float64 is an adequate reference here and only here: its error (~1e-16 of the outputs) is 1e8 below the
    box's effect. The rounding allowances, which float64 sampling cannot see, are checked against exact values
    op by op (with mutations) in test_bounds_fp.py."""
    ir = toy_irs[variant][1]
    fn = _block_fn(_all_float64(ir))
    gen = torch.Generator().manual_seed(21)
    valid, pos = torch.ones(1, T_LEN, dtype=torch.bool), torch.arange(T_LEN)[None]
    for seed in range(2):
        x = _prompt(seed + 11, ir.spec.hidden_size)
        rad = torch.full_like(x, 1e-8)
        enc = run_block_enclosed(ir, Enclosure(x[None], rad[None]), valid, pos)
        spread = torch.zeros_like(x)
        for _ in range(24):
            u = torch.rand(x.shape, generator=gen, dtype=F64)
            y = x + rad * torch.where(u < 0.25, -1.0, torch.where(u > 0.75, 1.0, 2 * u - 1))  # corners often
            out = fn(y)
            assert bool(((out - enc.mid[0]).abs() <= enc.rad[0]).all())
            spread = torch.maximum(spread, (out - fn(x)).abs())
        # Interval arithmetic loses the correlations a linear map keeps (|W|·rad), so on boxes it is loose
        # (the kind only evaluates points); it must still be an enclosure of the box's scale, not a vacuous one.
        assert float(enc.rad.max()) < 1e5 * float(spread.max()) and float(enc.rad.max()) < 1e-2


def test_softmax_enclosure_contains_every_softmax_of_the_box():
    from blockcert.bounds.pointwise import softmax

    gen = torch.Generator().manual_seed(4)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    mid = torch.randn(6, 6, generator=gen, dtype=F64) * 4
    rad = torch.rand(6, 6, generator=gen, dtype=F64) * 0.3
    enc = softmax(Enclosure(mid, rad), mask)
    for _ in range(200):
        u = torch.rand(6, 6, generator=gen, dtype=F64)
        z = mid + rad * torch.where(u < 0.3, -1.0, torch.where(u > 0.7, 1.0, 2 * u - 1))
        p = torch.softmax(z.masked_fill(~mask, -math.inf), dim=-1)
        assert bool(((p - enc.mid).abs() <= enc.rad).all())
    # Each p_s is smallest at the corner z_s = lo_s, z_r = hi_r (r ≠ s): the enclosure is the exact range.
    for s in range(6):
        corner = torch.where(torch.arange(6) == s, mid - rad, mid + rad)
        p_min = torch.softmax(corner.masked_fill(~mask, -math.inf), dim=-1)[:, s]
        assert torch.allclose(enc.mid[:, s] - enc.rad[:, s], p_min, rtol=1e-9, atol=1e-12)


PW_ULP_SLACK = 1.6  # measured 1.15–1.49 at 1–3 ulps (see the test's docstring)


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_pointwise_constant_bounds_the_exact_ratio_and_no_more(toy_irs, variant):
    """x̂ = x moved by 1–3 float32 ulps in a few coordinates of every token: the regime of a stitched run whose
    surrogate is close to exact, where the enclosure radii (~1e-12 of the outputs) are largest next to the
    numerator (~1e-7 of them). The reference ratio is the real function's, evaluated in float64: its error
    (~1e-14 of the outputs, condition included) is ≤ 1e-6 of the numerator here, so the lower side is checked
    to 1e-6. The upper side is the enclosure's own excess in this regime: the radii (the 1e-12 allowances of
    exp / sqrt / activations, amplified through |W|) reach ~1e-9 of the values, i.e. 15–49 % of the numerator
    on these blocks (measured), not the ~1e-8 that holds for the large deviations of a real stitched run."""
    ir = toy_irs[variant][2]
    prep = prepare_block(ir)
    fn = _block_fn(_all_float64(ir))
    valid, pos = torch.ones(1, T_LEN, dtype=torch.bool), torch.arange(T_LEN)[None]
    gen = torch.Generator().manual_seed(3)
    for seed in range(3):
        x = _prompt(seed, prep.d).to(torch.float32)  # the stored traces are float32: exact inputs
        x_hat = x.clone()
        for t in range(T_LEN):
            for j in torch.randperm(prep.d, generator=gen)[:4].tolist():
                toward = torch.tensor(math.inf if (t + j) % 2 else -math.inf)
                for _ in range(1 + (t + j + seed) % 3):
                    x_hat[t, j] = torch.nextafter(x_hat[t, j], toward)
        x64, xh64 = x.to(F64), x_hat.to(F64)
        ratio = float((fn(xh64) - fn(x64)).norm(dim=-1).max() / (xh64 - x64).norm(dim=-1).max())
        lp = float(pointwise_ratios(ir, x[None], x_hat[None], valid, pos)[0])
        assert ratio * (1 - 1e-6) <= lp <= ratio * PW_ULP_SLACK, (lp, ratio, lp / ratio - 1)
        # The ratio at two points of a ball never exceeds a Lipschitz bound valid on that ball.
        radius = float((xh64 - x64).norm(dim=-1).max()) * (1 + 1e-6)
        assert lp <= local_bound(prep, [ball(x64, radius, torch.arange(T_LEN))]).lipschitz
    assert float(pointwise_ratios(ir, x[None], x[None], valid, pos)[0]) == 0.0  # x̂ = x: any L holds, 0 included


def _block(index: int, eps: tuple[float, ...], out: tuple[float, ...], lips: dict[str, tuple[float, ...]]):
    """A bound.json block record with per-prompt ε, deviations and constants (the same in every distance)."""
    from blockcert.records.bound import PER_PROMPT_KINDS, BlockBound, Constant

    consts = tuple(Constant(kind=k, value=max(lips.get(k, (1.0,))), sound=k in ("global", "local", "metric",
                                                                                 "pointwise", "per_prompt"),
                            assumptions=("test",), per_prompt=lips.get(k, (1.0,) * len(eps))
                            if k in PER_PROMPT_KINDS else ()) for k in KINDS)
    return BlockBound(index=index, stitched=True, epsilon=max(eps), input_deviation=0.0, output_deviation=max(out),
                      radius=0.0, epsilon_per_prompt=eps, output_deviation_per_prompt=out,
                      epsilon_composed=max(eps), epsilon_composed_per_prompt=eps, epsilon_real_per_prompt=eps,
                      replay_error_per_prompt=(0.0,) * len(eps), metric_weights_in=((1.0,),) * len(eps),
                      metric_radius_per_prompt=(0.0,) * len(eps), epsilon_metric_per_prompt=eps,
                      output_deviation_metric_per_prompt=out, constants=consts)


def test_check_sound_fails_loudly_when_a_sound_bound_is_below_the_measurement():
    ones = {k: (1.0, 1.0) for k in KINDS}
    blocks = [_block(0, (1.0, 0.5), (1.0, 0.5), ones), _block(1, (1.0, 0.5), (2.0, 1.0), ones)]
    check_sound(blocks)  # 1·1 + 1 = 2 ≥ 2: holds exactly at the edge
    low = dict(ones, local=(0.5, 0.5))
    with pytest.raises(BlockCertError, match="exceeds the local bound"):
        check_sound([blocks[0], _block(1, (1.0, 0.5), (2.0, 1.0), low)])
    check_sound([blocks[0], _block(1, (1.0, 0.5), (2.0, 1.0), dict(ones, empirical=(0.0, 0.0)))])  # not sound
    # per_prompt claims each prompt's own bound: prompt 1 measured above its bound (0.5 + 0.5 = 1 < 1.5) fails
    # although the max over prompts (2 ≥ 2) holds.
    with pytest.raises(BlockCertError, match="prompt 1: .* exceeds its per_prompt bound"):
        check_sound([blocks[0], _block(1, (1.0, 0.5), (2.0, 1.5), dict(ones, metric=(1.0, 5.0)))])


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="session")
def bf16_runs(tmp_path_factory, toy_models) -> dict[str, Path]:
    """Pristine bf16-surrogate runs (all blocks, three short prompts) of the two toy families."""
    from blockcert.workflows.extract import ExtractOptions, run_extract

    root = tmp_path_factory.mktemp("bound-runs")
    prompts = root / "prompts.txt"
    prompts.write_text("The cat sat on the mat.\nDeux plus deux font quatre.\nfor i in range(3): print(i)\n")
    out = {}
    for variant in ("llama-gqa", "gpt2"):
        out[variant] = root / variant
        run_extract(ExtractOptions(str(toy_models[variant]), str(prompts), "all", out[variant], surrogate="bf16"))
    return out


@pytest.fixture
def bf16_copy(bf16_runs, tmp_path):
    def copy(variant: str) -> Path:
        dst = tmp_path / variant
        shutil.copytree(bf16_runs[variant], dst)
        return dst

    return copy


def _load(run: Path) -> BoundArtifact:
    return BoundArtifact.model_validate(json.loads((run / BOUND_FILE).read_text()))


def _recompute(art: BoundArtifact, kind: str) -> Fraction:
    """Σ ε_i Π_{j>i} L_j from bound.json's own numbers, in closed form (exact.global_bound, not the recursion);
    per_prompt: the same for each prompt's ε and constants, then the max."""
    def const(b, k):
        return next(c for c in b.constants if c.kind == k)

    if kind in ("per_prompt", "metric"):
        n = len(art.blocks[0].epsilon_per_prompt)
        field = "epsilon_metric_per_prompt" if kind == "metric" else "epsilon_composed_per_prompt"
        return exact.round_up_sig(max(
            exact.global_bound([exact.to_fraction(getattr(b, field)[p]) for b in art.blocks],
                               [exact.to_fraction(const(b, kind).per_prompt[p]) for b in art.blocks])
            for p in range(n)), 6)
    eps = [exact.to_fraction(b.epsilon_composed) for b in art.blocks]
    lips = [exact.to_fraction(const(b, kind).value or 0.0) for b in art.blocks]
    return exact.round_up_sig(exact.global_bound(eps, lips), 6)


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_bound_command_on_a_bf16_run(cli, bf16_copy, variant):
    run = bf16_copy(variant)
    r = cli("bound", run, "--power-iters", "3")
    assert r.code == 0, r.err
    art = _load(run)
    assert art.digest == art.body_digest()
    assert (run / BOUND_TABLE).read_text() in r.out and (run / BOUND_PLOT).stat().st_size > 0
    assert art.measured_deviation > 0
    for kb in art.bounds:
        claimed = Fraction(kb.claimed_bound)  # an exact decimal
        assert claimed == _recompute(art, kb.kind)  # the same exact rational path, recomputed by hand
    assert art.formal_kind == "pointwise"
    assert Fraction(art.claimed_bound["per_prompt"]) <= Fraction(art.claimed_bound["pointwise"]) \
        <= Fraction(art.claimed_bound["local"]) <= Fraction(art.claimed_bound["global"])
    for b in art.blocks:
        c = {x.kind: x for x in b.constants}
        assert c["local"].sound and c["global"].sound and c["pointwise"].sound
        assert not c["empirical"].sound and not c["trajectory"].sound
        assert c["empirical"].value <= c["local"].value <= c["global"].value
        assert c["pointwise"].value <= c["local"].value
        pp = c["per_prompt"]
        assert pp.sound and max(pp.per_prompt) == pp.value == c["pointwise"].value
        assert len(b.epsilon_per_prompt) == 3 and max(b.epsilon_per_prompt) == b.epsilon
        assert max(b.output_deviation_per_prompt) == b.output_deviation
        # The composed ε is the real surrogate's error plus the replay's forward error: it covers the float32
        # measurement up to float32 rounding (a few ulps of the outputs), never far from it.
        for e, ec, fwd in zip(b.epsilon_per_prompt, b.epsilon_composed_per_prompt, b.replay_error_per_prompt,
                              strict=True):
            assert ec >= fwd and abs(ec - e) <= 1e-4 * max(e, 1.0) + 2 * fwd
        assert c["metric"].sound and max(c["metric"].per_prompt) == c["metric"].value
        if c["trajectory"].value is not None:  # the float32 replay's ratio, within its rounding
            assert c["trajectory"].value <= c["pointwise"].value * (1 + 1e-3)
        assert all(x.assumptions for x in b.constants)
    first = {x.kind: x for x in art.blocks[0].constants}
    assert first["trajectory"].value is None  # x̂_0 = x_0: the trajectory ratio is undefined
    assert first["pointwise"].value == 0.0  # ... and the pointwise hypothesis holds for every L



def test_the_bound_is_recorded_in_the_full_model_certificate_and_re_derived_by_verify(cli, bf16_copy, toy_models):
    from blockcert.records.fullmodel import CERTIFICATE_FILE, FullModelCertificate
    from blockcert.verifier.run import verify_run

    run = bf16_copy("llama-gqa")
    assert cli("stitch", run, "--model", toy_models["llama-gqa"]).code == 0
    assert cli("bound", run, "--empirical-tokens", "0", "--no-plot").code == 0
    cert = FullModelCertificate.model_validate_json((run / CERTIFICATE_FILE).read_text())
    art = _load(run)
    assert cert.digest == cert.body_digest() and cert.bound is not None
    assert cert.bound.claimed_bound == art.claimed_bound and cert.bound.formal_kind == art.formal_kind
    assert art.measured_deviation_stitch == cert.metrics.measured_deviation
    assert verify_run(run).ok

    # A forger who keeps every file consistent (digests, hashes) but halves one block's per-prompt constant:
    # the claims no longer follow from the numbers beside them.
    data = json.loads((run / BOUND_FILE).read_text())
    c = next(c for c in data["blocks"][2]["constants"] if c["kind"] == "per_prompt")
    c["per_prompt"] = [v / 2 for v in c["per_prompt"]]
    c["value"] = max(c["per_prompt"])
    forged = BoundArtifact.model_validate(data).sealed()
    (run / BOUND_FILE).write_text(forged.model_dump_json())
    bound = cert.bound.model_copy(update={"file_sha256": sha256_file(run / BOUND_FILE)})
    (run / CERTIFICATE_FILE).write_text(cert.model_copy(update={"bound": bound}).sealed().model_dump_json())
    report = verify_run(run)
    assert not report.ok
    assert "the per_prompt claimed bound is not what its per-block numbers give" in "\n".join(report.lines())

def test_bound_command_with_a_fixed_radius(cli, bf16_copy):
    run = bf16_copy("llama-gqa")
    assert cli("bound", run, "--empirical-tokens", "0", "--no-plot").code == 0
    worst = max(b.input_deviation for b in _load(run).blocks)
    r = cli("bound", run, "--radius", str(worst * 1.5), "--empirical-tokens", "0", "--no-plot")
    assert r.code == 0, r.err
    assert _load(run).options.radius == worst * 1.5


def test_bound_on_exact_surrogates_is_zero(cli, run_copy):
    r = cli("bound", run_copy, "--empirical-tokens", "0", "--no-plot")
    assert r.code == 0, r.err
    art = _load(run_copy)
    # Exact surrogates replay the native block: no deviation. The bound is no longer 0: each block's ε is now
    # the real function's distance from the float32 traces, i.e. float32 rounding (a few ulps), which is what
    # made the stitched deviation 0 only by coincidence of identical rounding.
    assert art.measured_deviation == 0.0
    for kind in ("pointwise", "per_prompt"):
        assert 0 < Fraction(art.claimed_bound[kind]) < 1e-4


def test_bound_replays_missing_blocks_with_the_model(cli, toy_models, tmp_path):
    from blockcert.workflows.extract import ExtractOptions, run_extract

    run = tmp_path / "partial"
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hello world, again.\n")
    run_extract(ExtractOptions(str(toy_models["llama-gqa"]), str(prompts), "0,2", run, surrogate="bf16"))
    r = cli("bound", run, "--empirical-tokens", "0", "--no-plot")
    assert r.code == 1 and len(error_lines(r.err)) == 1 and "--model" in r.err
    r = cli("bound", run, "--model", toy_models["llama-gqa"], "--empirical-tokens", "0", "--no-plot")
    assert r.code == 0, r.err
    art = _load(run)
    assert [b.stitched for b in art.blocks] == [True, False, True] and art.blocks[1].epsilon == 0.0
    assert 0 < art.blocks[1].epsilon_composed < 1e-4  # the native block's float32 trace against its real function


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--radius", "1e6"], "reaches zero norm"),
        (["--radius", "1e-9"], "does not contain the stitched trajectory"),
        (["--radius", "-1"], "--radius must be"),
        (["--pieces", "0"], "--pieces"),
    ],
)
def test_bound_bad_options_fail_with_one_line(cli, bf16_copy, args, message):
    run = bf16_copy("llama-gqa")
    r = cli("bound", run, *args, "--empirical-tokens", "0", "--no-plot")
    assert r.code == 1 and len(error_lines(r.err)) == 1 and message in r.err
    assert not (run / BOUND_FILE).exists()


def test_bound_on_missing_weights_or_run_fails_with_one_line(cli, bf16_copy, tmp_path):
    run = bf16_copy("llama-gqa")
    (run / "block_001" / "ir.safetensors").unlink()
    r = cli("bound", run, "--empirical-tokens", "0", "--no-plot")
    assert r.code == 1 and len(error_lines(r.err)) == 1 and "block 1" in r.err
    r = cli("bound", tmp_path / "nowhere")
    assert r.code == 1 and len(error_lines(r.err)) == 1


def test_prepare_block_refuses_an_ir_without_a_weight(toy_irs):
    ir = toy_irs["llama-gqa"][0]
    ts = {k: v for k, v in ir.tensors.items() if k != "mlp.gate.weight"}
    with pytest.raises(BlockCertError, match="mlp.gate.weight"):
        prepare_block(BlockIR(ir.spec, ts))
    with pytest.raises(BlockCertError):
        prepare_block(replace(ir, tensors={**ir.tensors, "attn.q.weight": ir.tensors["attn.q.weight"][:-1]}))


def test_bound_artifact_is_checked_when_read(cli, bf16_copy):
    from blockcert.store.run_reader import load_bound_artifact

    run = bf16_copy("llama-gqa")
    with pytest.raises(BlockCertError, match="run `blockcert bound"):
        load_bound_artifact(run)
    assert cli("bound", run, "--empirical-tokens", "0", "--no-plot").code == 0
    art = load_bound_artifact(run)
    assert art.formal_kind == "pointwise"
    assert set(art.claimed_bound) == set(KINDS)
    data = json.loads((run / BOUND_FILE).read_text())
    data["claimed_bound"]["local"] = "0"
    (run / BOUND_FILE).write_text(json.dumps(data))
    with pytest.raises(BlockCertError, match="digest"):
        load_bound_artifact(run)


def test_bound_kinds_selection_computes_only_those_and_agrees_with_the_full_run(cli, bf16_copy, toy_models):
    """`--kinds` leaves out the costly kinds: the kinds computed are exactly the ones asked for, their numbers are
    those of a full run bit for bit, verify re-derives them (also --deep), and a file whose kind list was forged
    (re-sealed, hashes consistent) is refused."""
    from blockcert.verifier.run import verify_run

    full, part = bf16_copy("llama-gqa"), bf16_copy("gpt2").parent / "llama-gqa-kinds"
    shutil.copytree(full, part)
    assert cli("bound", full, "--empirical-tokens", "0", "--no-plot").code == 0
    r = cli("bound", part, "--kinds", "per_prompt,pointwise,trajectory", "--no-plot")
    assert r.code == 0, r.err
    a, b = _load(full), _load(part)
    assert b.kinds == ("pointwise", "per_prompt", "trajectory") and b.formal_kind == "pointwise"
    assert set(b.claimed_bound) == set(b.kinds) and [kb.kind for kb in b.bounds] == list(b.kinds)
    for ba, bb in zip(a.blocks, b.blocks, strict=True):
        assert [c.kind for c in bb.constants] == list(b.kinds) and bb.epsilon_metric_per_prompt == ()
        assert {c.kind: c for c in ba.constants if c.kind in b.kinds} == {c.kind: c for c in bb.constants}
        assert bb.epsilon_composed_per_prompt == ba.epsilon_composed_per_prompt
    assert {k: a.claimed_bound[k] for k in b.kinds} == b.claimed_bound
    assert "—" in (part / BOUND_TABLE).read_text()
    assert verify_run(part).ok and verify_run(part, deep=True).ok

    data = json.loads((part / BOUND_FILE).read_text())
    data["kinds"] = ["pointwise", "trajectory"]  # claims per_prompt was not computed, while it is carried
    (part / BOUND_FILE).write_text(BoundArtifact.model_validate(data).sealed().model_dump_json())
    from blockcert.store.manifest import record_outputs
    record_outputs(part, [BOUND_FILE])
    lines = "\n".join(verify_run(part).lines())
    assert "not exactly the kinds" in lines


@pytest.mark.parametrize(
    ("kinds", "message"),
    [
        ("pointwise,lokal", "unknown kind 'lokal'"),
        ("per_prompt,trajectory", "per_prompt needs pointwise"),
        ("local,empirical", None),
        ("empirical,pointwise", "empirical needs local"),
        ("trajectory,metric", "include at least one of global, local, pointwise"),
        ("", "(none given)"),
    ],
)
def test_bound_bad_kinds_fail_with_one_line(cli, bf16_copy, kinds, message):
    run = bf16_copy("llama-gqa")
    r = cli("bound", run, "--kinds", kinds, "--no-plot", "--power-iters", "2")
    if message is None:
        assert r.code == 0, r.err
        assert _load(run).kinds == ("local", "empirical") and _load(run).formal_kind == "local"
        return
    assert r.code == 1 and len(error_lines(r.err)) == 1 and message in r.err, r.err
    assert not (run / BOUND_FILE).exists()
