"""Issue 16: the enclosures of bounds/pointwise.py (and so trajectory_terms) for the new architectures.

Every IR feature the interpreter has for Gemma 3, Qwen2/2.5, Qwen3, Mistral and Phi-3 (sliding windows, the
inverted pattern, q/k RMSNorm, (1 + w) RMSNorm, sandwich norms, the declared score scale, q/k/v biases without
o, per-layer rotary tables, the gated GELU-tanh MLP) is checked three ways:

1. containment: the enclosure at a float32 input holds the IR's real function, evaluated by the interpreter in
   float64 on the float64 IR (its error, ~1e-14 absolute, is ≥ 1e4× below every radius here), and on one
   tiny block with every feature at once against an independent mpmath evaluation (200 bits);
2. the forward-error term bounds the float32 replay: fwd_tok ≥ ‖replay − real‖, and not by much more;
3. the checks can fail: each feature, dropped from the enclosure (the window from its mask, the q/k norms, the
   unit offset, the sandwich norms, the biases, the layer's own rotary table, the tanh GELU, the declared scale),
   makes the containment check fail on the same inputs.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import mpmath
import pytest
import torch

import blockcert
from blockcert.arch.gemma3 import SANDWICH
from blockcert.arch.loading import load_model
from blockcert.arch.native import NativeModel
from blockcert.arch.toy import build_toy_model
from blockcert.bounds import activations as act_mod
from blockcert.bounds import pointwise as pw
from blockcert.bounds.activations import act_range, critical_points
from blockcert.bounds.pointwise import Enclosure, gain, pointwise_ratios, run_block_enclosed
from blockcert.bounds.trajectory import trajectory_terms
from blockcert.core import exact as exact_q
from blockcert.core.interpreter import attention_mask, pattern_mask, run_block
from blockcert.core.ir import AttentionSpec, BlockIR, BlockSpec, HeadSelection, MlpSpec, NormSpec
from blockcert.core.ops import walk
from blockcert.workflows.bound import BoundOptions, run_bound
from blockcert.workflows.extract import ExtractOptions, run_extract

F64 = torch.float64
T_LEN = 10  # longer than every window used here (4), so the windows really mask
WINDOW = 4
VARIANTS = ("gemma3-window", "qwen3-qknorm", "qwen2-bias", "mistral", "phi3-fused")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def family_models(tmp_path_factory) -> dict[str, Path]:
    """Each family's toy model (tests/test_families.py's configs: Gemma 3 with a window of 4, local, local,
    global layers; Qwen2 with q/k/v biases; Qwen3 with q/k norms; Mistral; Phi-3 with fused projections)."""
    root = tmp_path_factory.mktemp("bounds-families")
    return {v: build_toy_model(v, root / v) for v in VARIANTS}


@pytest.fixture(scope="module")
def family_irs(family_models) -> dict[str, list[BlockIR]]:
    """The native float32 IRs of every block of each family's toy model."""
    out = {}
    for v, path in family_models.items():
        native = NativeModel(load_model(str(path)))
        out[v] = [native.extract_ir(i) for i in range(len(native.layers))]
    return out


def _windowed(ir: BlockIR, window: int | None = WINDOW) -> BlockIR:
    """The IR with a sliding window (the toy Mistral / Qwen / Phi-3 configs have none; the IR feature is what
    is enclosed, whichever family declares it)."""
    return BlockIR(ir.spec.model_copy(update={"attention": ir.spec.attention.model_copy(update={"window": window})}),
                   ir.tensors)


def _block(family_irs, variant: str, index: int = 0) -> BlockIR:
    ir = family_irs[variant][index]
    return ir if ir.spec.attention.window is not None or variant.startswith("gemma3") else _windowed(ir)


def _real(ir: BlockIR) -> BlockIR:
    """The IR in float64 throughout (every declared float32 norm and softmax step dropped, the q/k and sandwich
    norms included): the interpreter then evaluates the IR's real function to ~1e-15."""
    spec = ir.spec
    norms = {k: getattr(spec, k).model_copy(update={"compute_dtype": None})
             for k in ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm") if getattr(spec, k) is not None}
    qk = spec.attention.qk_norm
    attn = spec.attention.model_copy(update={"softmax_dtype": None,
                                             "qk_norm": None if qk is None else qk.model_copy(
                                                 update={"compute_dtype": None})})
    return BlockIR(spec.model_copy(update={**norms, "attention": attn}), {k: v.to(F64) for k, v in ir.tensors.items()})


def _inputs(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two float32 prompts [2, T, d] (one large-norm, sink-like token; the second prompt padded after 5 tokens,
    so some padded queries have a window of padding only), their validity and positions."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, T_LEN, d, generator=gen, dtype=F64)
    x[:, 0] *= 30.0
    valid = torch.ones(2, T_LEN, dtype=torch.bool)
    valid[1, 5:] = False
    return x.to(torch.float32), valid, torch.arange(T_LEN)[None].expand(2, T_LEN)


def _contained(enc: Enclosure, ref: torch.Tensor, valid: torch.Tensor, margin: float = 1.0) -> bool:
    """|ref − mid| · margin ≤ rad at every valid token (margin > 1: with room for the reference's own error)."""
    return bool((((ref - enc.mid).abs() * margin <= enc.rad) | ~valid[..., None]).all())


def _token_rel_radius(enc: Enclosure, valid: torch.Tensor) -> float:
    """max over valid tokens of max_j rad_j / max_j |mid_j|: the radius relative to the token's scale."""
    return float((enc.rad.amax(-1) / enc.mid.abs().amax(-1))[valid].max())


# ---------------------------------------------------------------- 1. containment, every family


CASES = [("gemma3-window", 0), ("gemma3-window", 2), ("qwen3-qknorm", 1), ("qwen2-bias", 1), ("mistral", 1),
         ("phi3-fused", 1)]


@pytest.mark.parametrize(("variant", "index"), CASES)
def test_enclosure_contains_the_real_function(family_irs, variant, index):
    """The enclosure of the float32 IR at float32 inputs holds the real function (float64 interpreter) at every
    valid token, and is tight: its radius is ≤ 1e-6 of each token's scale (measured 4e-9 on Mistral / Qwen2 /
    Phi-3, 2e-8 Qwen3, 1.6e-7 – 3.5e-7 Gemma 3: the 1e-12 allowances of exp / sqrt / activations, amplified by
    |W|·rad at each linear map and ~2× at each norm layer, of which Gemma has six on the path)."""
    ir = _block(family_irs, variant, index)
    real = _real(ir)
    for seed in range(2):
        x, valid, pos = _inputs(ir.spec.hidden_size, seed)
        enc = run_block_enclosed(ir, Enclosure.point(x), valid, pos)
        with torch.no_grad():
            ref = run_block(real, x.to(F64), valid, pos)
        # With 100× room: the float64 reference is off the real value by about what it is off mid (~1e-14),
        # so the real value is inside too (measured: every radius ≥ 1e4 × |ref − mid|).
        assert _contained(enc, ref, valid, margin=100.0)
        assert _token_rel_radius(enc, valid) < 1e-6
        assert bool(torch.isfinite(enc.mid).all() and torch.isfinite(enc.rad).all())  # padding rows included


def test_gemma_local_and_global_layers_are_what_the_toy_declares(family_irs):
    """The regime the Gemma cases sit in: block 0 is local (window 4 < T) with its own rotary base, block 2
    global; (1 + w) RMSNorm everywhere, sandwich norms, q/k norms, the tanh GELU. Qwen2: q/k/v biases, no o."""
    local, full = family_irs["gemma3-window"][0], family_irs["gemma3-window"][2]
    assert local.spec.attention.window == WINDOW and full.spec.attention.window is None
    assert local.spec.attn_norm.unit_offset and local.spec.attention.qk_norm.unit_offset
    assert local.spec.post_attn_norm is not None and local.spec.post_mlp_norm is not None
    assert local.spec.mlp.activation == "gelu_pytorch_tanh"
    assert not torch.equal(local.tensors["rope.cos"], full.tensors["rope.cos"])  # 1e4 vs 1e6 rotary bases
    qwen2 = family_irs["qwen2-bias"][0].tensors
    assert {"attn.q.bias", "attn.k.bias", "attn.v.bias"} <= set(qwen2) and "attn.o.bias" not in qwen2
    assert family_irs["qwen3-qknorm"][0].spec.attention.qk_norm is not None


def test_inverted_pattern_is_enclosed_with_the_interpreters_mask(family_irs):
    """The ablation pattern (keys ≥ t) with a window: the enclosure uses the interpreter's mask, whatever it is."""
    ir = _block(family_irs, "gemma3-window", 0)
    inv = BlockIR(ir.spec.model_copy(update={"attention": ir.spec.attention.model_copy(
        update={"pattern": "inverted"})}), ir.tensors)
    x, valid, pos = _inputs(ir.spec.hidden_size, 5)
    with torch.no_grad():
        ref = run_block(_real(inv), x.to(F64), valid, pos)
    assert _contained(run_block_enclosed(inv, Enclosure.point(x), valid, pos), ref, valid)
    assert not _contained(run_block_enclosed(ir, Enclosure.point(x), valid, pos), ref, valid)  # causal: not


def test_pruned_heads_are_enclosed_through_the_irs_kv_map(family_irs):
    """A Qwen3 block (4 query heads on 2 KV heads, q/k norms) with query heads 0 and 1 kept, both reading KV
    head 0: the enclosure follows `heads.kv_of_head` as the interpreter does (the bound's own path densifies
    first, but the enclosure must not depend on that)."""
    ir = _block(family_irs, "qwen3-qknorm", 1)
    a, ts = ir.spec.attention, dict(ir.tensors)
    hd = a.head_dim
    ts["attn.q.weight"] = ts["attn.q.weight"][: 2 * hd]
    ts["attn.k.weight"], ts["attn.v.weight"] = ts["attn.k.weight"][:hd], ts["attn.v.weight"][:hd]
    ts["attn.o.weight"] = ts["attn.o.weight"][:, : 2 * hd]
    heads = HeadSelection(native_heads=a.num_heads, native_kv_heads=a.num_kv_heads, kept=(0, 1), kept_kv=(0,),
                          kv_of_head=(0, 0))
    pruned = BlockIR(ir.spec.model_copy(update={"attention": a.model_copy(
        update={"num_heads": 2, "num_kv_heads": 1, "heads": heads})}), ts)
    x, valid, pos = _inputs(ir.spec.hidden_size, 2)
    with torch.no_grad():
        ref = run_block(_real(pruned), x.to(F64), valid, pos)
    assert _contained(run_block_enclosed(pruned, Enclosure.point(x), valid, pos), ref, valid, margin=100.0)


# ---------------------------------------------------------------- 2. the replay's forward error


@pytest.mark.parametrize(("variant", "index"), CASES)
def test_forward_error_term_bounds_the_float32_replay(family_irs, variant, index):
    """fwd_tok ≥ ‖fl32 B̂(x)_t − B̂(x)_t‖ at every valid token (the float32 replay computes Gemma's 1 + w, the score
    scale and the softmax in float32: all of that is forward error), and ≤ 3× that plus 1e-6 of the token
    (measured 1.03–1.07× on Mistral / Qwen2 / Phi-3, 1.14× Qwen3, up to 2.3× on Gemma 3, whose radii reach
    3.5e-7 of the token through its six norm layers: comparable to float32 rounding, still sound). The pointwise
    ratio at a moved input covers the real function's ratio and is within 1e-4 of it (the deviation, 1e-3 of the
    tokens, dwarfs the radii)."""
    ir = _block(family_irs, variant, index)
    real = _real(ir)
    x, valid, pos = _inputs(ir.spec.hidden_size, 11)
    with torch.no_grad():
        y32 = run_block(ir, x, valid, pos)
        y64 = run_block(real, x.to(F64), valid, pos)
    true = (y32.to(F64) - y64).norm(dim=-1)
    scale = y64.norm(dim=-1)
    terms = trajectory_terms(ir, x, x, y32, y32, valid, pos)
    fwd = terms.fwd_tok
    assert bool((fwd >= true)[valid].all())
    assert bool((fwd <= 3 * true + 1e-6 * scale)[valid].all())
    assert bool((fwd[~valid] == 0).all()) and bool((terms.ratio == 0).all())  # x̂ = x: every L holds
    gen = torch.Generator().manual_seed(3)
    xh = (x.to(F64) * (1 + 1e-3 * torch.randn(x.shape, generator=gen, dtype=F64))).to(torch.float32)
    with torch.no_grad():
        num = token_max(run_block(real, xh.to(F64), valid, pos) - y64, valid)
    ratio = num / token_max(xh.to(F64) - x.to(F64), valid)
    lp = pointwise_ratios(ir, x, xh, valid, pos)
    assert bool((lp >= ratio).all()) and bool((lp <= ratio * (1 + 1e-4)).all())


def token_max(diff: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid, diff.norm(dim=-1), torch.zeros((), dtype=F64)).amax(-1)


# ---------------------------------------------------------------- 3. the checks can fail


def _drop_window(monkeypatch):
    """The enclosure's mask without the window (the interpreter keeps its own)."""
    monkeypatch.setattr(pw, "attention_mask", lambda spec, valid: pattern_mask(spec.pattern, valid))


def _spec(ir: BlockIR, **update) -> BlockIR:
    return BlockIR(ir.spec.model_copy(update=update), ir.tensors)


def _attn(ir: BlockIR, **update) -> BlockIR:
    return _spec(ir, attention=ir.spec.attention.model_copy(update=update))


def _no_offset(ir: BlockIR) -> BlockIR:
    s = ir.spec
    norms = {k: getattr(s, k).model_copy(update={"unit_offset": False})
             for k in ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm") if getattr(s, k) is not None}
    return _spec(_attn(ir, qk_norm=s.attention.qk_norm.model_copy(update={"unit_offset": False})), **norms)


def _tensors(ir: BlockIR, drop: tuple[str, ...] = (), **replace) -> BlockIR:
    ts = {k: v for k, v in ir.tensors.items() if k not in drop}
    return BlockIR(ir.spec, {**ts, **replace})


MUTATIONS = {
    # (variant, block, what the enclosure is given instead of the IR the reference runs)
    "window dropped from the mask": ("gemma3-window", 0, None),
    "window dropped (mistral)": ("mistral", 1, None),
    "q/k norms skipped": ("qwen3-qknorm", 1, lambda ir: _attn(ir, qk_norm=None)),
    "q/k norms skipped (gemma)": ("gemma3-window", 0, lambda ir: _attn(ir, qk_norm=None)),
    "w instead of 1 + w": ("gemma3-window", 0, _no_offset),
    "sandwich norms skipped": ("gemma3-window", 2, lambda ir: _spec(
        ir, ops=tuple(op for op in ir.spec.ops if op.weights not in ("post_attn_norm", "post_mlp_norm")))),
    "q/k/v biases dropped": ("qwen2-bias", 1, lambda ir: _tensors(ir, ("attn.q.bias", "attn.k.bias", "attn.v.bias"))),
    "global layer's rotary base on a local layer": ("gemma3-window", 0, None),
    "erf GELU for the tanh GELU": ("gemma3-window", 2, lambda ir: _spec(
        ir, mlp=ir.spec.mlp.model_copy(update={"activation": "gelu"}))),
    "score scale off by 1e-6": ("gemma3-window", 2, lambda ir: _attn(
        ir, scaling=ir.spec.attention.scaling * (1 + 1e-6))),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_missing_rule_fails_the_containment_check(family_irs, monkeypatch, name):
    """The same containment check as above, with one rule taken out of the enclosure: it must fail. So each
    feature really changes the output on these configurations, by far more than the enclosure's radius."""
    variant, index, mutate = MUTATIONS[name]
    ir = _block(family_irs, variant, index)
    x, valid, pos = _inputs(ir.spec.hidden_size, 0)
    with torch.no_grad():
        ref = run_block(_real(ir), x.to(F64), valid, pos)
    assert _contained(run_block_enclosed(ir, Enclosure.point(x), valid, pos), ref, valid)
    if name.startswith("window"):
        _drop_window(monkeypatch)
        wrong = ir
    elif name.startswith("global layer"):
        full = family_irs[variant][2].tensors
        wrong = _tensors(ir, **{"rope.cos": full["rope.cos"], "rope.sin": full["rope.sin"]})
    else:
        wrong = mutate(ir)
    assert not _contained(run_block_enclosed(wrong, Enclosure.point(x), valid, pos), ref, valid)


def test_the_window_masks_exactly_what_the_interpreter_masks(family_irs):
    """The enclosure reads the interpreter's `attention_mask` itself: old keys beyond the window are off, and a
    padded query whose window holds only padding keys has no key at all (its softmax row is 0 in the
    enclosure, finite; padding never reaches a valid token)."""
    spec = _block(family_irs, "gemma3-window", 0).spec.attention
    _, valid, _ = _inputs(8, 0)
    mask = attention_mask(spec, valid)
    assert pw.attention_mask is attention_mask
    t = T_LEN - 1
    assert mask[0, t].tolist() == [False] * (T_LEN - WINDOW) + [True] * WINDOW
    assert not bool(mask[1, t].any()) and bool(mask[1, :5].any(-1).all())


# ---------------------------------------------------------------- the (1 + w) gain, exactly


def test_unit_offset_gain_is_the_exact_real_one_plus_w():
    """gain() encloses 1 + w exactly: mid ± rad with |1 + w − mid| = rad (TwoSum's error is exact), rad = 0 for
    the float32 weights of a real model, > 0 for a w below 2⁻²⁹ where float64's 1 + w rounds. The interpreter's
    float32 1 + w differs (that rounding is the replay's forward error, covered by fwd_tok above)."""
    w = torch.tensor([0.1, -0.3, 1e-10, -2.0**-40, 3.5, 7e-9], dtype=torch.float32)
    spec = NormSpec(kind="rms", eps=1e-6, compute_dtype="float32", unit_offset=True)
    g = gain(spec, {"n.weight": w}, "n")
    for wi, m, r in zip(w.tolist(), g.mid.tolist(), g.rad.tolist(), strict=True):
        assert abs(1 + Fraction(wi) - Fraction(m)) == Fraction(r)
    assert g.rad[:2].tolist() == [0.0, 0.0] and float(g.rad[2]) > 0
    assert float((1.0 + w[:1])[0]) != 1 + Fraction(float(w[0]))  # float32's 1 + 0.1 is not the real one
    plain = gain(spec.model_copy(update={"unit_offset": False}), {"n.weight": w}, "n")
    assert torch.equal(plain.mid, w.to(F64)) and not bool(plain.rad.any())
    layer = gain(NormSpec(kind="layer", eps=1e-5, unit_offset=True), {"n.weight": w}, "n")
    assert torch.equal(layer.mid, w.to(F64))  # the interpreter's LayerNorm branch ignores the flag


# ---------------------------------------------------------------- the tanh GELU's range, exactly


def _gelu_tanh(y):
    return y * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (y + mpmath.mpf("0.044715") * y**3))) / 2


def test_gelu_tanh_range_holds_the_exact_function_around_its_minimum_and_tails():
    """act_range("gelu_pytorch_tanh") against the exact function (decimal constants, 200 bits) on intervals
    that straddle its minimiser a ≈ −0.75, sit in the tails, or are points: the minimum inside an interval is
    the value at a, found by bisection, so it is checked at a itself too."""
    mpmath.mp.prec = 200
    a = critical_points("gelu_pytorch_tanh")[0]
    lo = torch.tensor([a - 0.3, a - 1e-9, -6.0, -40.0, 3.0, a, -1e-3, -3.9], dtype=F64)
    hi = torch.tensor([a + 0.2, a + 1e-9, -5.5, -30.0, 3.5, a, 1e-3, -0.1], dtype=F64)
    v_lo, v_hi = act_range("gelu_pytorch_tanh", lo, hi)
    for i in range(len(lo)):
        for f in [k / 40 for k in range(41)]:
            y = mpmath.mpf(float(lo[i])) + f * (mpmath.mpf(float(hi[i])) - mpmath.mpf(float(lo[i])))
            assert mpmath.mpf(float(v_lo[i])) <= _gelu_tanh(y) <= mpmath.mpf(float(v_hi[i])), (i, f)
        if float(lo[i]) <= a <= float(hi[i]):
            assert mpmath.mpf(float(v_lo[i])) <= _gelu_tanh(mpmath.mpf(a))
    assert float((v_hi - v_lo)[5]) < 1e-11  # a point: only the allowance


# ---------------------------------------------------------------- one tiny block against mpmath


def _tiny_gemma_like(seed: int = 0) -> BlockIR:
    """d = 8, two query heads on one KV head of dim 4, window 3: every feature at once. (1 + w) RMSNorm (float32
    declared) before and after both sublayers and on q/k, biases on q/k/v only, a score scale that is not
    head_dim^-1/2, rotary tables of base 1e4, gated tanh GELU with d_ff = 12."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.5):
        return (torch.randn(*shape, generator=gen, dtype=F64) * s).to(torch.float32)

    d, n, n_kv, hd, ff = 8, 2, 1, 4, 12
    norm = NormSpec(kind="rms", eps=1e-6, compute_dtype="float32", unit_offset=True)
    inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=F64) / hd))
    ang = torch.arange(32, dtype=F64)[:, None] * inv[None]
    ang = torch.cat([ang, ang], dim=-1)
    ts = {
        "attn_norm.weight": r(d), "mlp_norm.weight": r(d), "post_attn_norm.weight": r(d),
        "post_mlp_norm.weight": r(d), "attn.q_norm.weight": r(hd), "attn.k_norm.weight": r(hd),
        "attn.q.weight": r(n * hd, d), "attn.q.bias": r(n * hd, s=0.1), "attn.k.weight": r(n_kv * hd, d),
        "attn.k.bias": r(n_kv * hd, s=0.1), "attn.v.weight": r(n_kv * hd, d), "attn.v.bias": r(n_kv * hd, s=0.1),
        "attn.o.weight": r(d, n * hd), "mlp.gate.weight": r(ff, d), "mlp.up.weight": r(ff, d),
        "mlp.down.weight": r(d, ff), "rope.cos": ang.cos().to(torch.float32), "rope.sin": ang.sin().to(torch.float32),
    }
    spec = BlockSpec(
        family="gemma3_text", block_index=0, hidden_size=d, attn_norm=norm, mlp_norm=norm, post_attn_norm=norm,
        post_mlp_norm=norm, ops=SANDWICH,
        attention=AttentionSpec(num_heads=n, num_kv_heads=n_kv, head_dim=hd, scaling=6.0**-0.5, rope=True,
                                bias=True, softmax_dtype="float32", window=3, qk_norm=norm),
        mlp=MlpSpec(kind="gated", activation="gelu_pytorch_tanh", bias=False),
    )
    return BlockIR(spec, ts)


def _mp_block(ir: BlockIR, x: torch.Tensor, mask: torch.Tensor, positions: list[int]) -> list[list]:
    """The IR's real function on one prompt [T, d], in mpmath: an independent reading of the IR's semantics
    (core/interpreter.py's), sharing only the op walk."""
    spec = ir.spec
    ts = {k: v.to(F64).tolist() for k, v in ir.tensors.items()}
    mp = mpmath.mpf

    def norm_row(ns: NormSpec, w: list, row: list) -> list:
        r = mpmath.sqrt(mpmath.fsum(v * v for v in row) / len(row) + mp(ns.eps))
        return [v / r * ((1 + mp(g)) if ns.unit_offset else mp(g)) for v, g in zip(row, w, strict=True)]

    def lin(name: str, row: list) -> list:
        b = ts.get(f"{name}.bias")
        return [mpmath.fsum(mp(wv) * v for wv, v in zip(wr, row, strict=True)) + (mp(b[o]) if b else 0)
                for o, wr in enumerate(ts[f"{name}.weight"])]

    a = spec.attention
    hd = a.head_dim

    def heads(rows: list, count: int, name: str | None) -> list:  # [T][H][hd], normed and rotated
        out = []
        for t, row in enumerate(rows):
            per = []
            for h in range(count):
                v = row[h * hd:(h + 1) * hd]
                if a.qk_norm is not None:
                    v = norm_row(a.qk_norm, ts[f"attn.{name}_norm.weight"], v)
                cos, sin = ts["rope.cos"][positions[t]], ts["rope.sin"][positions[t]]
                rot = [-v[j + hd // 2] for j in range(hd // 2)] + [v[j] for j in range(hd // 2)]
                per.append([v[j] * mp(cos[j]) + rot[j] * mp(sin[j]) for j in range(hd)])
            out.append(per)
        return out

    def attention(_op, rows):
        q = heads([lin("attn.q", r) for r in rows], a.num_heads, "q")
        k = heads([lin("attn.k", r) for r in rows], a.num_kv_heads, "k")
        v = [lin("attn.v", r) for r in rows]
        group = a.num_heads // a.num_kv_heads
        outs = []
        for t in range(len(rows)):
            merged = []
            for h in range(a.num_heads):
                g = h // group
                keys = [s for s in range(len(rows)) if bool(mask[t, s])]
                z = {s: mpmath.fsum(qa * kb for qa, kb in zip(q[t][h], k[s][g], strict=True)) * mp(a.scaling)
                     for s in keys}
                top = max(z.values())
                e = {s: mpmath.exp(z[s] - top) for s in keys}
                tot = mpmath.fsum(e.values())
                merged += [mpmath.fsum(e[s] / tot * v[s][g * hd + j] for s in keys) for j in range(hd)]
            outs.append(lin("attn.o", merged))
        return outs

    def mlp(_op, rows):
        return [lin("mlp.down", [_gelu_tanh(gv) * uv for gv, uv in zip(lin("mlp.gate", r), lin("mlp.up", r),
                                                                         strict=True)]) for r in rows]

    def norm(op, rows):
        return [norm_row(getattr(spec, op.weights), ts[f"{op.weights}.weight"], r) for r in rows]

    def add(p, q):
        return [[u + w for u, w in zip(r, s, strict=True)] for r, s in zip(p, q, strict=True)]

    rows = [[mp(v) for v in r] for r in x.to(F64).tolist()]
    return walk(spec, {"norm": norm, "attention": attention, "mlp": mlp}, add, rows)


def test_tiny_block_enclosure_against_mpmath():
    """Every output of the tiny block (mpmath, 200 bits, an independent implementation of the IR's semantics)
    lies in the enclosure, whose radius is small (below); and with the declared scale replaced by head_dim^-1/2,
    or the window dropped, the enclosure misses it."""
    mpmath.mp.prec = 200
    ir = _tiny_gemma_like()
    t = 6
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, t, 8, generator=gen, dtype=F64)
    x[0, 0] *= 20.0
    x = x.to(torch.float32)
    valid, pos = torch.ones(1, t, dtype=torch.bool), torch.arange(t)[None]
    # The mask from its definition (causal, window 3: keys t − 3 < s ≤ t), and it is the interpreter's.
    mask = torch.tensor([[s <= q and q - s < 3 for s in range(t)] for q in range(t)])
    assert torch.equal(mask, attention_mask(ir.spec.attention, valid)[0])
    exact = _mp_block(ir, x[0], mask, list(range(t)))

    def contains(enc: Enclosure) -> bool:
        return all(abs(exact[i][j] - mpmath.mpf(float(enc.mid[0, i, j]))) <= mpmath.mpf(float(enc.rad[0, i, j]))
                   for i in range(t) for j in range(8))

    enc = run_block_enclosed(ir, Enclosure.point(x), valid, pos)
    assert contains(enc)
    # Not loose: 2.4e-9 of the token's scale (median element 7.5e-10). It is the recorded 1e-12 allowance for
    # each float64 sqrt / exp / activation, amplified ~2× per norm layer (six on this path, q/k included) and
    # 2–3× per linear map (|W|·rad loses the signs). With few-ulp allowances instead, the same rules give
    # 6.5e-12: the rules themselves add little; the assumption is what sets the width.
    assert _token_rel_radius(enc, valid) < 1e-8
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pw, "_FN", 2.0**-52)
        patch.setattr(act_mod, "_SLACK", 2.0**-50)
        assert _token_rel_radius(run_block_enclosed(ir, Enclosure.point(x), valid, pos), valid) < 1e-10
    with torch.no_grad():  # the float64 interpreter agrees with mpmath to ~1e-15: the two readings are one function
        y64 = run_block(_real(ir), x.to(F64), valid, pos)[0]
    assert max(abs(exact[i][j] - mpmath.mpf(float(y64[i, j]))) for i in range(t) for j in range(8)) < 1e-13
    assert not contains(run_block_enclosed(_attn(ir, scaling=0.5), Enclosure.point(x), valid, pos))
    assert not contains(run_block_enclosed(_attn(ir, window=None), Enclosure.point(x), valid, pos))



# ---------------------------------------------------------------- end to end: `blockcert bound --kinds` on Gemma 3


TRAJECTORY_KINDS = ("pointwise", "per_prompt", "trajectory")


def test_bound_on_a_bf16_gemma3_run_with_the_trajectory_kinds(family_models, family_irs, tmp_path):
    """A bf16-surrogate run of the Gemma 3 toy (windowed local layers, (1 + w) and sandwich norms, q/k norms),
    bounded with the kinds whose only rule is the enclosed replay: every sound claim holds against the measured
    deviation (run_bound checks each prefix), recomputes from bound.json's own numbers, and the pointwise
    constants are the float32 trajectory ratios made rigorous (within 1e-3 of them); `blockcert verify`, which
    re-derives the pointwise constants from the enclosures, accepts the run."""
    assert [ir.spec.attention.window for ir in family_irs["gemma3-window"]] == [WINDOW, WINDOW, None]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat on the mat.\nDeux plus deux font quatre.\nfor i in range(3): print(i)\n")
    run = tmp_path / "run"
    run_extract(ExtractOptions(str(family_models["gemma3-window"]), str(prompts), "all", run, surrogate="bf16"))
    art, _ = run_bound(BoundOptions(run, kinds=TRAJECTORY_KINDS), plot=False)
    assert tuple(art.kinds) == TRAJECTORY_KINDS and art.formal_kind == "pointwise"
    assert art.measured_deviation > 0
    for kind in ("pointwise", "per_prompt"):
        claimed = Fraction(art.claimed_bound[kind])
        assert claimed >= Fraction(art.measured_deviation)
        if kind == "pointwise":
            eps = [exact_q.to_fraction(b.epsilon_composed) for b in art.blocks]
            lips = [exact_q.to_fraction(next(c for c in b.constants if c.kind == kind).value) for b in art.blocks]
            assert claimed == exact_q.round_up_sig(exact_q.global_bound(eps, lips), 6)
    assert Fraction(art.claimed_bound["per_prompt"]) <= Fraction(art.claimed_bound["pointwise"])
    for b in art.blocks:
        c = {x.kind: x for x in b.constants}
        assert set(c) == set(TRAJECTORY_KINDS) and c["pointwise"].sound and not c["trajectory"].sound
        if c["trajectory"].value is None:
            assert b.index == 0 and c["pointwise"].value == 0.0  # x̂_0 = x_0: every L holds
        else:
            assert c["trajectory"].value * (1 - 1e-3) <= c["pointwise"].value <= c["trajectory"].value * (1 + 1e-3)
        for e, ec, fwd in zip(b.epsilon_per_prompt, b.epsilon_composed_per_prompt, b.replay_error_per_prompt,
                              strict=True):
            assert 0 < fwd <= ec and abs(ec - e) <= 1e-4 * max(e, 1.0) + 2 * fwd
    assert blockcert.verify(run)


def test_rope_enclosure_radius_is_nonnegative_and_contains_every_rotation_of_the_box():
    """The rotated half of the radius must not be negated (rotate_half flips the sign of half its input)."""
    from blockcert.bounds.pointwise import rope as rope_enclosed
    from blockcert.core.interpreter import rotate_half

    g = torch.Generator().manual_seed(0)
    mid = torch.randn(3, 8, dtype=torch.float64, generator=g)
    rad = torch.full_like(mid, 1e-3)
    cos, sin = torch.full_like(mid, 0.6), torch.full_like(mid, 0.8)
    e = rope_enclosed(Enclosure(mid, rad), cos, sin)
    assert bool((e.rad >= 0).all())
    for _ in range(200):
        x = mid + (torch.rand(mid.shape, dtype=torch.float64, generator=g) * 2 - 1) * rad
        y = x * cos + rotate_half(x) * sin
        assert bool(((y - e.mid).abs() <= e.rad).all())
