"""Issue 18: the bounds are sound in floating point. Each test sits in the regime where a missing rounding term
shows: the float32 replay at ulp-level perturbations, |x| ≈ 1e4, sums of n ≥ 11008 terms, with exact
(Fraction) or mpmath references and tight comparisons against the quantity each bound claims to bound."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import pytest
import torch

from blockcert.bounds.activations import act_prime_range, act_range
from blockcert.bounds.pointwise import Enclosure, activation, pointwise_ratios
from blockcert.bounds.pointwise import _up as radius_up
from blockcert.bounds.spectral import psd_factor
from blockcert.bounds.trajectory import trajectory_terms
from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR

F64 = torch.float64
mpmath.mp.prec = 200


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def native_gqa(toy_models) -> list[BlockIR]:
    """The native float32 IRs of the toy GQA + RoPE Llama's blocks."""
    from blockcert.arch.loading import load_model
    from blockcert.arch.native import NativeModel

    native = NativeModel(load_model(str(toy_models["llama-gqa"])))
    return [native.extract_ir(i) for i in range(len(native.layers))]


def _stream(d: int, seed: int, t: int = 6) -> torch.Tensor:
    """A float32 residual stream [1, T, d] with one large-norm (attention-sink-like) token, as on smollm2."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, t, d, generator=gen, dtype=F64)
    x[0, 0] *= 300.0
    return x.to(torch.float32)


def _bump(ir: BlockIR, name: str, flat: int) -> BlockIR:
    """The IR with one weight moved up by one float32 ulp."""
    ts = dict(ir.tensors)
    w = ts[name].clone()
    v = w.view(-1)
    v[flat] = torch.nextafter(v[flat], torch.tensor(math.inf, dtype=v.dtype))
    ts[name] = w
    return BlockIR(ir.spec, ts)


def _real(ir: BlockIR) -> BlockIR:
    """The IR evaluated in float64 throughout (no float32 norm or softmax): the real function to ~1e-15."""
    spec = ir.spec
    norms = {k: getattr(spec, k).model_copy(update={"compute_dtype": None}) for k in ("attn_norm", "mlp_norm")}
    attn = spec.attention.model_copy(update={"softmax_dtype": None})
    return BlockIR(spec.model_copy(update={**norms, "attention": attn}), {k: v.to(F64) for k, v in ir.tensors.items()})


def _dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.to(F64) - b.to(F64)).norm(dim=-1).max())


def test_counterexample_one_ulp_surrogate_then_an_exact_block(native_gqa):
    """The issue's counterexample: block 0's surrogate is native with one weight one float32 ulp up, block 1 is
    exact (its certified ε is 0). The old pointwise bound L_1·ε_0 (ε from the float32 replay, L_1 of the real
    function) fell below the measured float32 deviation, by up to 14.9×. The composed bound must not."""
    b0, b1 = native_gqa[0], native_gqa[1]
    d = b0.spec.hidden_size
    valid = torch.ones(1, 6, dtype=torch.bool)
    pos = torch.arange(6)[None]
    hits, old_below = 0, 0
    for trial in range(30):
        x0 = _stream(d, trial)
        name = ("attn.q.weight", "attn.v.weight", "mlp.down.weight", "mlp.up.weight")[trial % 4]
        s0 = _bump(b0, name, (trial * 7919) % b0.tensors[name].numel())
        with torch.no_grad():
            x1 = run_block(b0, x0, valid, pos)  # the traces: the native model in float32
            x2 = run_block(b1, x1, valid, pos)
            xh1 = run_block(s0, x0, valid, pos)  # the stitched replay
            xh2 = run_block(b1, xh1, valid, pos)
        eps0_float = _dist(xh1, x1)  # what the certificate measured
        if eps0_float == 0:
            continue
        hits += 1
        measured = Fraction(_dist(xh2, x2))
        t0 = trajectory_terms(s0, x0, x0, x1, xh1, valid, pos)
        t1 = trajectory_terms(b1, x1, xh1, x2, xh2, valid, pos)
        lip1 = Fraction(float(t1.ratio[0]))
        bound = lip1 * Fraction(float(t0.epsilon()[0])) + Fraction(float(t1.epsilon()[0]))
        assert bound >= measured, (trial, float(bound), float(measured))
        # The bound stays tight: the forward-error terms are a few float32 ulps of the outputs, not more.
        scale = float(x2.to(F64).norm(dim=-1).max())
        assert float(bound - measured) <= 1e-4 * scale
        old = lip1 * Fraction(eps0_float)  # the pre-issue-18 composition: ε_1 = 0, no forward error
        old_below += old < measured
    assert hits >= 3  # the regime was reached
    assert old_below >= 1  # and in it the old composition was unsound: this test fails on the old code


def test_forward_error_term_bounds_the_float32_replay_tightly(native_gqa):
    """fwd_t ≥ ‖fl32 B̂(x̂)_t − B̂(x̂)_t‖ with the exact value from a float64 evaluation (its own error ~1e-12 here,
    5 decades below float32 rounding), and not more than a few times that distance plus the enclosure width."""
    ir = native_gqa[1]
    d = ir.spec.hidden_size
    valid, pos = torch.ones(1, 6, dtype=torch.bool), torch.arange(6)[None]
    ir64 = _real(ir)
    for seed in range(3):
        x = _stream(d, 100 + seed)
        with torch.no_grad():
            y32 = run_block(ir, x, valid, pos)
            y64 = run_block(ir64, x.to(F64), valid, pos)
        true = (y32.to(F64) - y64).norm(dim=-1)[0]
        terms = trajectory_terms(ir, x, x, y32, y32, valid, pos)
        fwd = terms.fwd_tok[0]
        assert bool((fwd >= true - 1e-9 * y64.norm(dim=-1)[0]).all())
        assert bool((fwd <= 1.01 * true + 1e-6 * y64.norm(dim=-1)[0]).all())
        assert float(terms.eps_tok.max()) == pytest.approx(float(fwd.max()), rel=1e-6)  # x_next = the replay


def test_pointwise_ratio_at_one_ulp_in_one_coordinate(native_gqa):
    """x̂ = x plus one float32 ulp in one coordinate of the large-norm token: the ratio bound must cover the
    real function's ratio (float64 reference, within 1e-3 relative of it: the perturbation is 1e-5 of the
    token) and the constant must be tight, not inflated by the rounding allowances."""
    ir = native_gqa[1]
    ir64 = _real(ir)
    d = ir.spec.hidden_size
    valid, pos = torch.ones(1, 6, dtype=torch.bool), torch.arange(6)[None]
    x = _stream(d, 7)
    for j in (0, 5, 17):
        xh = x.clone()
        xh[0, 0, j] = torch.nextafter(xh[0, 0, j], torch.tensor(math.inf))
        with torch.no_grad():
            num = float((run_block(ir64, xh.to(F64), valid, pos) - run_block(ir64, x.to(F64), valid, pos))
                        .norm(dim=-1).max())
        ratio = num / _dist(xh, x)
        lp = float(pointwise_ratios(ir, x, xh, valid, pos)[0])
        assert lp >= ratio * (1 - 1e-3)
        assert lp <= ratio * 1.01 + 1e-3


@pytest.mark.parametrize("name", ["silu", "gelu", "gelu_pytorch_tanh"])
@pytest.mark.parametrize("centre", [9.0e3, 1.0e4, -1.0e4, 1.6e4])
def test_activation_enclosure_at_large_pre_activations(name, centre):
    """At |x| ≈ 1e4 an ulp is 1.8e-12: fl(mid ± rad) may round inward by more than the old absolute slack of
    1e-12. Every exact φ(y) (mpmath, 200 bits) for y in [mid − rad, mid + rad] must lie in the enclosure."""
    fn = {
        "silu": lambda y: y / (1 + mpmath.exp(-y)),
        "gelu": lambda y: y * (1 + mpmath.erf(y / mpmath.sqrt(2))) / 2,
        "gelu_pytorch_tanh": lambda y: y * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (y + 0.044715 * y**3))) / 2,
    }[name]
    mids = torch.tensor([centre + k * 1.8e-12 * abs(centre) / 1e4 for k in range(-3, 4)], dtype=F64)
    for rad_val in (0.0, 3e-13, 1.3e-12, 2.7e-12):
        rad = torch.full_like(mids, rad_val)
        enc = activation(name, Enclosure(mids, rad))
        for m, r, em, er in zip(mids.tolist(), rad.tolist(), enc.mid.tolist(), enc.rad.tolist(), strict=True):
            for f in (-1, -0.5, 0, 0.5, 1):
                y = mpmath.mpf(m) + f * mpmath.mpf(r)
                assert abs(fn(y) - mpmath.mpf(em)) <= mpmath.mpf(er), (m, r, f)
        assert float(enc.rad.max()) < 1e-7 * abs(centre)  # and not vacuous


@pytest.mark.parametrize("centre", [9.0e3, -1.0e4])
def test_activation_derivative_range_at_large_pre_activations(centre):
    lo = torch.tensor([centre], dtype=F64)
    hi = torch.nextafter(lo, torch.tensor(math.inf, dtype=F64))
    dlo, dhi = act_prime_range("silu", lo, hi)
    for y in (mpmath.mpf(float(lo)), mpmath.mpf(float(hi))):
        s = 1 / (1 + mpmath.exp(-y))
        exact = s * (1 + y * (1 - s))
        assert mpmath.mpf(float(dlo)) <= exact <= mpmath.mpf(float(dhi))
    vlo, vhi = act_range("silu", lo, hi)
    assert mpmath.mpf(float(vlo)) <= mpmath.mpf(float(lo)) / (1 + mpmath.exp(-mpmath.mpf(float(lo))))


@pytest.mark.parametrize("n", [11008, 14336])
def test_radius_rounding_allowance_covers_sums_of_n_terms(n):
    """A computed radius is a float sum of n nonnegative terms; in sequential order 1 + 2⁻⁵³ + 2⁻⁵³ + … loses
    every small term (ties to even), n·2⁻⁵³ ≈ 1.2e-12 relative for n = 11008: more than the old 1 + 1e-12
    nudge. The allowance of _up must restore an upper bound of the exact (Fraction) sum."""
    small = 2.0**-53
    s = 1.0
    for _ in range(n - 1):
        s += small
    assert s == 1.0  # every small term was lost
    exact = 1 + (n - 1) * Fraction(small)
    assert Fraction(s * (1 + 1e-12)) < exact  # the old nudge was not enough at this n
    assert Fraction(float(radius_up(torch.tensor([s], dtype=F64), n)[0])) >= exact


def test_psd_factor_dominates_the_gram_of_a_wide_matrix():
    """L Lᵀ ⪰ W Wᵀ exactly (every principal minor of the difference ≥ 0, in rationals) for W of inner dimension
    20000, where fl(W Wᵀ) carries γ_d (not γ_{n+1}) of error."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 20000, generator=gen, dtype=F64)
    w[1] = w[0] + 1e-7 * w[1]  # nearly rank-deficient: the Gram's rounding matters
    lf = psd_factor(w)
    lq = [[Fraction(v) for v in row] for row in lf.tolist()]
    wq = [[Fraction(v) for v in row] for row in w.tolist()]
    n = 3
    diff = [[sum(lq[i][k] * lq[j][k] for k in range(n)) - sum(a * b for a, b in zip(wq[i], wq[j], strict=True))
             for j in range(n)] for i in range(n)]

    def det(m):
        if len(m) == 1:
            return m[0][0]
        return sum((-1) ** c * m[0][c] * det([row[:c] + row[c + 1:] for row in m[1:]]) for c in range(len(m)))

    from itertools import combinations
    for k in range(1, n + 1):
        for idx in combinations(range(n), k):
            assert det([[diff[i][j] for j in idx] for i in idx]) >= 0


# ---------------------------------------------------------------- enclosure operations against exact values
# Each op of bounds/pointwise.py is evaluated at exact float64 inputs chosen so that float64 really rounds by
# its worst case (cancellation, large dynamic range), and the exact result (mpmath, 200 bits, of the same float
# inputs) must lie in mid ± rad. At a point the radius is nothing but the rounding allowance, so dropping one γ
# or u term empties it: each test also applies that mutation (monkeypatch) and asserts the check then fails.


def _mp(t: torch.Tensor):
    """A float64 tensor as nested lists of exact mpmath numbers."""
    return [_mp(r) for r in t] if t.dim() else mpmath.mpf(float(t))


def _contains(enc: Enclosure, exact) -> bool:
    """Every exact value within mid ± rad (compared exactly, in mpmath)."""
    mids, rads = enc.mid.reshape(-1).tolist(), enc.rad.reshape(-1).tolist()

    def flat(x):
        return [v for r in x for v in flat(r)] if isinstance(x, list) else [x]

    return all(abs(e - mpmath.mpf(m)) <= mpmath.mpf(r) for e, m, r in zip(flat(exact), mids, rads, strict=True))


def _mutated(module, **values):
    patch = pytest.MonkeyPatch()
    for name, value in values.items():
        patch.setattr(module, name, value)
    return patch


def _cancelling(gen: torch.Generator, n: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x and W whose dot products cancel: terms of size 1e8 that sum to O(1), so float64's rounding of the
    partial sums (≈ 1e-8 absolute) is 1e-8 relative to the result, far above any 1e-12 nudge."""
    x = torch.randn(n, generator=gen, dtype=F64) * 1e4
    w = torch.randn(rows, n, generator=gen, dtype=F64) * 1e4
    w[:, -1] = -(w[:, :-1] @ x[:-1]) / x[-1]  # the last term cancels the others (up to rounding)
    return x, w


def test_linear_and_matmul_enclosures_under_cancellation():
    from blockcert.bounds import pointwise as pw

    gen = torch.Generator().manual_seed(0)
    x, w = _cancelling(gen, 40, 6)
    b = torch.randn(6, generator=gen, dtype=F64)
    exact = [mpmath.fsum(mpmath.mpf(float(xi)) * mpmath.mpf(float(wi)) for xi, wi in zip(x, row, strict=True))
             + mpmath.mpf(float(bi)) for row, bi in zip(w, b, strict=True)]
    enc = pw.linear(Enclosure.point(x[None]), w, b)
    err = max(abs(e - mpmath.mpf(m)) for e, m in zip(exact, enc.mid[0].tolist(), strict=True))
    assert err > 1e-9  # float64 really is off here, by far more than 1e-12 of the result
    assert _contains(enc, [exact])
    assert float(enc.rad.max()) < 1e-2  # γ_41·Σ|x||W| ≈ 41·1.1e-16·40·1e8·0.8: tight to the worst case
    patch = _mutated(pw, _g=lambda n: 0.0)
    try:
        assert not _contains(pw.linear(Enclosure.point(x[None]), w, b), [exact])
    finally:
        patch.undo()
    # matmul (scores q·kᵀ, probabilities·values): the same cancellation in the inner product.
    a, bm = x[None, :], w.T.contiguous()
    exact_mm = [[mpmath.fsum(mpmath.mpf(float(a[0, k])) * mpmath.mpf(float(bm[k, j])) for k in range(40))
                 for j in range(6)]]
    assert _contains(pw.matmul(Enclosure.point(a), Enclosure.point(bm)), exact_mm)
    patch = _mutated(pw, _g=lambda n: 0.0)
    try:
        assert not _contains(pw.matmul(Enclosure.point(a), Enclosure.point(bm)), exact_mm)
    finally:
        patch.undo()


def test_rope_mul_and_add_enclosures_cover_their_roundings():
    """q·cos + rotate_half(q)·sin with the two products nearly cancelling, elementwise products and sums of
    random float64s (each rounds by up to u): the exact results lie inside; without the u terms, not."""
    from blockcert.bounds import pointwise as pw
    from blockcert.core.interpreter import rotate_half

    gen = torch.Generator().manual_seed(1)
    q = torch.randn(4, 8, generator=gen, dtype=F64) * 1e3
    ang = torch.rand(4, 8, generator=gen, dtype=F64) * 6
    cos, sin = torch.cos(ang), torch.sin(ang)
    rot = rotate_half(q)
    cos = -rot * sin / q  # q·cos ≈ −rotate_half(q)·sin: the sum cancels
    cos = cos.clamp(-1, 1)
    exact_rope = [[mpmath.mpf(float(q[i, j])) * mpmath.mpf(float(cos[i, j]))
                   + mpmath.mpf(float(rot[i, j])) * mpmath.mpf(float(sin[i, j])) for j in range(8)] for i in range(4)]
    a, b = torch.randn(30, generator=gen, dtype=F64), torch.randn(30, generator=gen, dtype=F64) * 1e-7
    exact_mul = [mpmath.mpf(float(x)) * mpmath.mpf(float(y)) for x, y in zip(a, b, strict=True)]
    exact_add = [mpmath.mpf(float(x)) + mpmath.mpf(float(y)) for x, y in zip(a, b, strict=True)]

    def run():
        return (pw.rope(Enclosure.point(q), cos, sin), pw.mul(Enclosure.point(a), Enclosure.point(b)),
                pw.add(Enclosure.point(a), Enclosure.point(b)))

    r, m, s = run()
    assert _contains(r, exact_rope) and _contains(m, exact_mul) and _contains(s, exact_add)
    patch = _mutated(pw, _U=0.0)
    try:
        r, m, s = run()
        assert not _contains(r, exact_rope) and not _contains(m, exact_mul) and not _contains(s, exact_add)
    finally:
        patch.undo()


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_normalise_enclosure_at_a_point_with_large_dynamic_range(kind):
    """A sink-like token (one coordinate 2e4, others 1e-3, as on smollm2) and n = 11008 coordinates (the sums of
    squares then carry n·u ≈ 1.2e-12 of rounding): the exact n(y) of the float input lies inside; without the
    evaluation-error term (γ_{d+6} + 1e-12)|n| it does not."""
    from blockcert.bounds import pointwise as pw
    from blockcert.core.ir import NormSpec

    spec = NormSpec(kind=kind, eps=1e-5)
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(11008, generator=gen, dtype=F64) * 1e-3
    y[0] = 2.0e4
    y[1:40] = torch.randn(39, generator=gen, dtype=F64) * 300
    ym = [mpmath.mpf(v) for v in y.tolist()]
    d = len(ym)
    if kind == "layer":
        mean = mpmath.fsum(ym) / d
        ym = [v - mean for v in ym]
    r = mpmath.sqrt(mpmath.fsum(v * v for v in ym) / d + mpmath.mpf(spec.eps))
    exact = [[v / r for v in ym]]
    enc = pw.normalise(spec, Enclosure.point(y[None]))
    assert _contains(enc, exact)
    assert float((enc.rad / enc.mid.abs().clamp_min(1e-300)).max()) < 1e-11  # and no more than the allowance
    patch = _mutated(pw, _g=lambda n: 0.0, _FN=0.0)
    try:
        assert not _contains(pw.normalise(spec, Enclosure.point(y[None])), exact)
    finally:
        patch.undo()


def test_softmax_enclosure_at_a_point_with_large_scores():
    """Scores near 1e4 (an attention sink's logits) and spread over 30 units: the exact softmax of the float
    scores lies in the enclosure; without the exponent and exp allowances (u, 1e-12) it does not."""
    from blockcert.bounds import pointwise as pw

    gen = torch.Generator().manual_seed(3)
    z = 1e4 + torch.randn(4, 7, generator=gen, dtype=F64) * 10
    z[:, 0] -= 3e4  # large dynamic range inside a row
    mask = torch.ones(4, 7, dtype=torch.bool)
    exact = []
    for row in z.tolist():
        e = [mpmath.exp(mpmath.mpf(v)) for v in row]
        tot = mpmath.fsum(e)
        exact.append([v / tot for v in e])
    enc = pw.softmax(Enclosure.point(z), mask)
    assert _contains(enc, exact)
    assert float(enc.rad.max()) < 1e-10
    patch = _mutated(pw, _U=0.0, _FN=0.0, _g=lambda n: 0.0)
    try:
        assert not _contains(pw.softmax(Enclosure.point(z), mask), exact)
    finally:
        patch.undo()
