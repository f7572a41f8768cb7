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

import pytest
import torch

from blockcert.bounds import activations as act_mod
from blockcert.bounds.attention import (
    AttentionGeometry,
    attention_bound,
    attention_center,
    attention_displacement,
    lp_max,
)
from blockcert.bounds.block import ball, global_bound, local_bound, segment_cover
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


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many small tensor operations: one thread is fastest, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def _diag_norms(jac: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.linalg.matrix_norm(jac[i, :, i, :], ord=2) for i in range(jac.shape[0])])


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


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (64, 64), (96, 40), (1, 9)])
@pytest.mark.parametrize("scale", [1e-150, 1.0, 1e150])
def test_spectral_upper_is_an_upper_bound(shape, scale):
    gen = torch.Generator().manual_seed(hash((shape, scale)) % 2**31)
    a = torch.randn(*shape, generator=gen, dtype=F64) * scale
    true = float(torch.linalg.matrix_norm(a, ord=2))
    up = spectral_upper(a)
    assert true <= up <= true * (1 + 5e-3)
    assert power_lower(a) <= true * (1 + 1e-12)


def test_spectral_upper_many_rank_one_zero_and_equal_singular_values():
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(30, 1, generator=gen, dtype=F64), torch.randn(1, 20, generator=gen, dtype=F64)
    mats = torch.stack([torch.zeros(30, 20, dtype=F64), u @ v, torch.eye(30, 20, dtype=F64) * 3])
    up, low = spectral_upper_many(mats)
    true = torch.linalg.matrix_norm(mats, ord=2)
    assert bool((up >= true).all()) and bool((up <= true * 1.01 + 1e-300).all())
    assert float(up[0]) == 0.0 and bool((low <= true * (1 + 1e-9)).all())


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


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_block_local_bound_never_below_the_true_jacobian(toy_irs, variant):
    ir = toy_irs[variant][2]
    prep = prepare_block(ir)
    fn = _block_fn(ir)
    mlp_only = _block_fn(_with(ir, attn=True))  # per token: its operator norm is max_t ‖J_tt‖ exactly
    gen = torch.Generator().manual_seed(13)
    for seed in range(2):
        x = _prompt(seed + 5, prep.d)
        for nb in _sets(x, seed, radius_scale=0.3):
            lb = local_bound(prep, [nb])
            pts = _points(nb, gen, 4)
            for y in pts:
                jac = _jacobian(fn, y)
                assert float(_row_norms(jac).max()) <= lb.lipschitz
                assert float(_ascent(jac, restarts=2, iters=15).max()) <= lb.lipschitz
                jm = _jacobian(mlp_only, y) - torch.eye(T_LEN * prep.d, dtype=F64).view(T_LEN, prep.d, T_LEN, prep.d)
                # MLP-only block: no mixing, and the traced mid-block residual is the input itself
                assert float(_diag_norms(jm).max()) <= global_bound(prep).k_mlp
            for y, y2 in zip(pts, pts[1:] + pts[:1], strict=True):  # difference quotients on the set
                num = (fn(y) - fn(y2)).norm(dim=-1).max()
                den = (y - y2).norm(dim=-1).max()
                if len(nb.centers) == 1:  # a ball is convex: any two of its points
                    assert float(num) <= lb.lipschitz * float(den) * (1 + 1e-9)


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_mlp_bound_never_below_the_true_jacobian(toy_irs, variant):
    ir = _with(toy_irs[variant][0], attn=True)  # block(Y) = Y + MLP(N2(Y)), acting token by token
    prep = prepare_block(ir)
    fn = _block_fn(ir)
    gen = torch.Generator().manual_seed(17)
    x = _prompt(3, prep.d)
    nb = _sets(x, 3, radius_scale=0.5)[1]
    lb = local_bound(prep, [nb])
    for y in _points(nb, gen, 5):
        jac = _jacobian(fn, y) - torch.eye(T_LEN * prep.d, dtype=F64).view(T_LEN, prep.d, T_LEN, prep.d)
        assert float(_diag_norms(jac).max()) <= lb.k_mlp * (1 + 1e-9)


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_global_bound_covers_any_input(toy_irs, variant):
    ir = toy_irs[variant][1]
    prep = prepare_block(ir)
    glob = global_bound(prep)
    fn = _block_fn(ir)
    for seed, scale in enumerate((1e-3, 0.1, 3.0, 300.0)):  # near zero norm too, where local bounds fail
        y = _prompt(seed + 20, prep.d, scale)
        assert float(_row_norms(_jacobian(fn, y)).max()) <= glob.lipschitz
        x_hat = y + 1e-3 * scale
        local = local_bound(prep, [segment_cover(y, x_hat, torch.arange(T_LEN), 2)])
        assert local.lipschitz <= glob.lipschitz * (1 + 1e-9)


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
    """Input boxes wide enough (1e-8) that the range arguments, not rounding, decide: every sampled input's
    float64 output must lie in the enclosure. Interval arithmetic loses the correlations a linear map keeps
    (|W|·rad), so on boxes it is loose; the kind only ever evaluates points (radius 0, see below)."""
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
        # An enclosure, not a vacuous one: far narrower than the outputs themselves.
        assert float(enc.rad.max()) < 1e5 * float(spread.max()) and float(enc.rad.max()) < 1e-2
    point = run_block_enclosed(ir, Enclosure.point(x[None]), valid, pos)
    # At a point only rounding (~1e-16, amplified by the same |W| sums) widens it.
    assert float((point.rad / (1 + point.mid.abs())).max()) < 1e-6


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


@pytest.mark.parametrize("variant", ["llama-gqa", "gpt2"])
def test_pointwise_constant_bounds_the_exact_ratio_and_no_more(toy_irs, variant):
    ir = toy_irs[variant][2]
    prep = prepare_block(ir)
    fn = _block_fn(_all_float64(ir))  # the reference: the same real function, in float64 throughout
    valid, pos = torch.ones(1, T_LEN, dtype=torch.bool), torch.arange(T_LEN)[None]
    gen = torch.Generator().manual_seed(3)
    for seed in range(3):
        x = _prompt(seed, prep.d).to(torch.float32)  # the stored traces are float32: exact inputs
        x_hat = x + 0.05 * torch.randn(x.shape, generator=gen).to(torch.float32)
        x64, xh64 = x.to(F64), x_hat.to(F64)
        ratio = float((fn(xh64) - fn(x64)).norm(dim=-1).max() / (xh64 - x64).norm(dim=-1).max())
        lp = float(pointwise_ratios(ir, x[None], x_hat[None], valid, pos)[0])
        assert ratio <= lp <= ratio * (1 + 1e-6)  # float64 evaluation is within 1e-15 of the exact ratio
        # The ratio at two points of a ball never exceeds a Lipschitz bound valid on that ball.
        radius = float((xh64 - x64).norm(dim=-1).max()) * (1 + 1e-6)
        assert lp <= local_bound(prep, [ball(x64, radius, torch.arange(T_LEN))]).lipschitz
    assert float(pointwise_ratios(ir, x[None], x[None], valid, pos)[0]) == 0.0  # x̂ = x: any L holds, 0 included


def test_check_sound_fails_loudly_when_a_sound_bound_is_below_the_measurement():
    prefix = {k: [Fraction(1), Fraction(2)] for k in KINDS}
    check_sound(prefix, [1.0, 2.0])
    prefix["local"] = [Fraction(1), Fraction(3, 2)]
    with pytest.raises(BlockCertError, match="exceeds the local bound"):
        check_sound(prefix, [1.0, 2.0])
    prefix["local"] = [Fraction(1), Fraction(2)]
    prefix["empirical"] = [Fraction(0), Fraction(0)]  # not sound: no failure
    check_sound(prefix, [1.0, 2.0])
    # per_prompt claims each prompt's own bound: prompt 1 measured above its bound fails although the max
    # over prompts (2 ≥ 2) holds.
    per_prompt = [[Fraction(1), Fraction(2)], [Fraction(1), Fraction(1)]]
    check_sound(prefix, [1.0, 2.0], per_prompt, [(1.0, 0.5), (2.0, 1.0)])
    with pytest.raises(BlockCertError, match="prompt 1: .* exceeds its per_prompt bound"):
        check_sound(prefix, [1.0, 2.0], per_prompt, [(1.0, 0.5), (1.0, 2.0)])


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

    if kind == "per_prompt":
        n = len(art.blocks[0].epsilon_per_prompt)
        return exact.round_up_sig(max(
            exact.global_bound([exact.to_fraction(b.epsilon_per_prompt[p]) for b in art.blocks],
                               [exact.to_fraction(const(b, kind).per_prompt[p]) for b in art.blocks])
            for p in range(n)), 6)
    eps = [exact.to_fraction(b.epsilon) for b in art.blocks]
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
        if kb.sound:
            assert claimed >= exact.to_fraction(art.measured_deviation)
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
    assert art.measured_deviation == 0.0 and all(v == "0" for v in art.claimed_bound.values())


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
