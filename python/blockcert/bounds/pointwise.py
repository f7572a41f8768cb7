"""Kind `pointwise`: a sound bound on the one ratio the pointwise composition theorem needs,

    L_i^pw ≥ dist(B̂_i(x̂_i), B̂_i(x_i)) / dist(x̂_i, x_i)         (per prompt, max over prompts)

at the run's own two points: the traced input x_i and the stitched input x̂_i. `TrajHyp` in the Lean core
asks for nothing more, so these constants instantiate the theorem as well as a Lipschitz constant would,
and they cannot be beaten by any bound of that form: they are the trajectory constants (kind 3), made
rigorous.

How: the block is evaluated at both points in float64 midpoint–radius arithmetic (an `Enclosure` holds
a float64 midpoint and a radius such that the exact real value lies within mid ± rad elementwise). Every
operation adds its own worst-case float64 rounding to the radius (γ_n = nu/(1 − nu) for an n-term dot
product, Higham Thm 3.1), and every nonlinearity maps enclosures to enclosures by a range argument
(norm layers through their Jacobian bound on a ball, softmax through monotonicity in each score, the
MLP activation through its exact range on an interval, activations.py). Starting from the exact
float32 inputs (radius 0) the radii start at the 1e-12 allowances below and grow by |W|·rad at each linear
map and ~2× at each norm layer: 4e-9 of a token's scale on the toy Llama-like blocks, 3.5e-7 on the toy
Gemma 3 block (six norm layers on its path), so the bound is the measured ratio up to that. The numerator
is then ‖mid_a − mid_b‖ + ‖rad_a + rad_b‖ per token, the denominator the float64 distance of the (exactly
representable) inputs rounded down.

Every IR feature the interpreter has is enclosed where the interpreter applies it, by walking the same op
sequence (`core.ops.walk`): the declared mask (pattern and sliding window: the interpreter's own
`attention_mask`, a discrete constant), q/k norms per head before RoPE, (1 + w) RMSNorm gains (`gain`),
sandwich norms (ops named post_attn_norm / post_mlp_norm), the declared score scale, biases wherever stored,
the block's own rotary tables, GQA and pruned-head KV maps, and every MLP activation of activations.py.

Assumptions (recorded with the constant): the block is the exact real function its IR declares (its
float32 rounding, like that of the local kind, is inside ε_i and the measured deviation); torch's float64
exp, sqrt and activation functions are accurate to 1e-12 relative (libm is accurate to a few ulp, 1e-16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from blockcert.bounds.activations import act_range, outward
from blockcert.bounds.spectral import gamma
from blockcert.core.interpreter import attention_mask, rotate_half
from blockcert.core.ir import BlockIR, NormSpec
from blockcert.core.ops import walk
from blockcert.errors import BlockCertError

F64 = torch.float64
_U = 2.0**-53
_FN = 1e-12  # relative error allowed to a float64 exp / sqrt / activation (libm: a few ulp)
_NUDGE = 1 + 1e-12  # for results of a bounded number (≤ 8) of float64 operations: relative error ≤ 8u ≪ 1e-12
_TINY = 1e-300  # absolute floor: covers underflow in products of small radii


@dataclass(frozen=True)
class Enclosure:
    """Every exact real value lies in mid ± rad (elementwise; rad ≥ 0)."""

    mid: torch.Tensor
    rad: torch.Tensor

    @staticmethod
    def point(x: torch.Tensor) -> Enclosure:
        m = x.detach().to(F64)  # float32 / bf16 values are exact in float64
        return Enclosure(m, torch.zeros_like(m))


def _up(r: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Round a computed radius up past its own rounding.

    A radius is a sum of at most n + 8 nonnegative float64 terms (products of nonnegative factors), so its
    computed value is ≥ (exact)·(1 − γ_{n+8}) in any summation order (Higham Thm 3.1 with all terms ≥ 0);
    multiplying by 1 + γ_{n+10} (itself rounded, and stored rounded up) restores an upper bound. A fixed
    factor such as 1 + 1e-12 would cover this only while n·u ≤ 1e-12, i.e. n ≤ 9007: not d_ff = 11008.
    """
    return r * (1 + _g(n + 10)) + _TINY


def _g(n: int) -> float:
    return float(gamma(n)) * _NUDGE


def add(a: Enclosure, b: Enclosure) -> Enclosure:
    mid = a.mid + b.mid
    return Enclosure(mid, _up(a.rad + b.rad + _U * mid.abs()))


def linear(x: Enclosure, w: torch.Tensor, b: torch.Tensor | None) -> Enclosure:
    """x·Wᵀ + b: |fl(x_mid·Wᵀ + b) − (x_mid·Wᵀ + b)| ≤ γ_{n+1}(|x_mid|·|W|ᵀ + |b|); the input radius adds |W|·rad."""
    w = w.to(F64)
    aw = w.abs()
    mid = x.mid @ w.T
    size = x.mid.abs() @ aw.T
    if b is not None:
        b = b.to(F64)
        mid = mid + b
        size = size + b.abs()
    return Enclosure(mid, _up(x.rad @ aw.T + _g(w.shape[1] + 1) * size, w.shape[1] + 1))


def scale(x: Enclosure, w: torch.Tensor) -> Enclosure:
    """Elementwise product with exact weights w (one rounding)."""
    w = w.to(F64)
    mid = x.mid * w
    return Enclosure(mid, _up(x.rad * w.abs() + _U * mid.abs()))


def mul(a: Enclosure, b: Enclosure) -> Enclosure:
    mid = a.mid * b.mid
    rad = a.mid.abs() * b.rad + a.rad * b.mid.abs() + a.rad * b.rad + _U * mid.abs()
    return Enclosure(mid, _up(rad))


def matmul(a: Enclosure, b: Enclosure) -> Enclosure:
    """a @ b over the last two axes, with the inner length's γ and both radii."""
    mid = a.mid @ b.mid
    am, bm = a.mid.abs(), b.mid.abs()
    n = a.mid.shape[-1]
    rad = am @ b.rad + a.rad @ bm + a.rad @ b.rad + _g(n) * (am @ bm)
    return Enclosure(mid, _up(rad, 4 * n))


def normalise(spec: NormSpec, x: Enclosure) -> Enclosure:
    """n(y) = y / sqrt(‖y‖²/d + eps) (LayerNorm: of the centred y), without gain or bias, per token (last axis).

    On the box mid ± rad, ‖y‖ ≥ ‖mid‖ − ‖rad‖, so r(y) ≥ r_min = sqrt(max(‖mid‖ − ‖rad‖, 0)²/d + eps). The
    Jacobian (I − y yᵀ/(d r²))/r has entries |J_jk| ≤ (δ_jk + |y_j||y_k|/(d r²))/r, so by the mean-value
    inequality per element |n_j(y) − n_j(mid)| ≤ (rad_j + |y|_j·Σ_k |y|_k rad_k/(d r_min²))/r_min with
    |y| ≤ |mid| + rad: elementwise, which keeps the radii from growing by √d at every norm layer.
    n(mid) itself is computed with a relative error ≤ γ_{d+6} + _FN per element.
    """
    d = x.mid.shape[-1]
    mid, rad = x.mid, x.rad
    if spec.kind == "layer":
        # P = I − 11ᵀ/d moves each element by the mean too; the centring's rounding is at most
        # γ_{d+2}(|mid_j| + mean|mid|) per element, folded into the radius.
        err = _g(d + 2) * (mid.abs() + mid.abs().mean(-1, keepdim=True))
        rad = _up(rad + rad.mean(-1, keepdim=True) + err, d)
        mid = mid - mid.mean(-1, keepdim=True)
    sum_up = 1 + _g(d + 10)  # a d-term sum of nonnegative terms, as in _up
    rho = torch.sqrt((rad * rad).sum(-1) * sum_up) * _NUDGE
    norm = torch.sqrt((mid * mid).sum(-1))
    floor = torch.clamp(norm * (1 - _g(d + 2)) - rho, min=0.0)
    r_min = (torch.sqrt(floor * floor / d + spec.eps) * (1 - 1e-12))[..., None]
    top = mid.abs() + rad
    cross = (top * rad).sum(-1, keepdim=True) * sum_up / (d * r_min * r_min) * _NUDGE
    moved = (rad + top * cross) / r_min
    r = torch.sqrt((mid * mid).sum(-1, keepdim=True) / d + spec.eps)
    n = mid / r
    return Enclosure(n, _up(moved * _NUDGE + (_g(d + 6) + _FN) * n.abs()))


def gain(spec: NormSpec, ts: dict, name: str) -> Enclosure:
    """The norm layer's gain as the IR declares it, as an exact real number: w, or 1 + w (`unit_offset`, RMS only,
    exactly where the interpreter's `_norm` applies it; its LayerNorm branch ignores the flag).

    The choice: the certified function uses the *real* 1 + w. The interpreter forms 1 + w in the compute dtype
    (float32 for Gemma's declared float32 RMSNorm, so a random w ≈ 0.1 loses ~4 of its bits there); that
    rounding belongs to the float replay fl B̂, and the a-posteriori forward-error term (trajectory.py) bounds
    the replay against this real function, so it is covered there and is not modelled here. In float64, 1 + w
    is exact for a float32 w with 2⁻²⁹ ≤ |w| < 2⁵¹; in general its error is recovered exactly by TwoSum (Knuth,
    round-to-nearest, no overflow: six float64 additions, no products), and goes into the radius.
    """
    w = ts[f"{name}.weight"].to(F64)
    if not (spec.unit_offset and spec.kind == "rms"):
        return Enclosure(w, torch.zeros_like(w))
    one = torch.ones_like(w)
    s = one + w
    back = s - one
    err = (one - (s - back)) + (w - back)  # exactly (1 + w) − fl(1 + w)
    return Enclosure(s, err.abs())


def norm_layer(spec: NormSpec, ts: dict, name: str, x: Enclosure) -> Enclosure:
    """gain ⊙ n(x) + bias over the last axis: the block's norms, Gemma's sandwich norms (post_attn_norm,
    post_mlp_norm: the same rule on a sublayer's output, named by the op sequence) and the q/k norms (per head,
    over the head dimension)."""
    h = mul(normalise(spec, x), gain(spec, ts, name))  # with a radius-0 gain this is `scale`, bit for bit
    bias = ts.get(f"{name}.bias") if spec.kind == "layer" else None  # the interpreter's RMS branch has no bias
    return h if bias is None else add(h, Enclosure.point(bias.expand_as(h.mid)))


def softmax(scores: Enclosure, mask: torch.Tensor) -> Enclosure:
    """Row softmax over the allowed keys; each p_s is increasing in z_s and decreasing in every other z_r:

        e^{lo_s} / (e^{lo_s} + Σ_{r≠s} e^{hi_r})  ≤  p_s  ≤  e^{hi_s} / (e^{hi_s} + Σ_{r≠s} e^{lo_r})
    """
    zero = torch.zeros((), dtype=F64)
    m, r = scores.mid, scores.rad
    # Any common shift leaves softmax unchanged; only the rounding of the two subtractions that form each
    # exponent counts, at most 4u·(|mid| + rad + |shift|) absolute.
    shift = torch.where(mask, m, torch.full_like(m, -math.inf)).amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    slack = 4 * _U * (m.abs() + r + shift.abs())
    e_lo = torch.where(mask, torch.exp(m - r - shift - slack) * (1 - 2 * _FN), zero)
    e_hi = torch.where(mask, torch.exp(m + r - shift + slack) * (1 + 2 * _FN) + _TINY, zero)
    n = int(mask.shape[-1]) + 2
    s_lo, s_hi = e_lo.sum(-1, keepdim=True), e_hi.sum(-1, keepdim=True)
    others_hi = (s_hi - e_hi) + _g(n) * 2 * s_hi  # ≥ Σ_{r≠s} e_hi_r despite rounding of sum and difference
    others_lo = torch.clamp((s_lo - e_lo) - _g(n) * 2 * s_lo, min=0.0)
    p_lo = torch.where(mask, e_lo / (e_lo + others_hi) * (1 - 4 * _U), zero)
    p_hi = torch.where(mask, torch.clamp(e_hi / (e_hi + others_lo) * (1 + 4 * _U), max=1.0), zero)
    return Enclosure(0.5 * (p_lo + p_hi), _up(0.5 * (p_hi - p_lo) + _U * p_hi))


def rope(x: Enclosure, cos: torch.Tensor, sin: torch.Tensor) -> Enclosure:
    a, b = x.mid * cos, rotate_half(x.mid) * sin
    # rotate_half negates half of its input: the radius of the rotated part is |rotate_half(rad)|, never negative
    rad = x.rad * cos.abs() + rotate_half(x.rad).abs() * sin.abs() + 2 * _U * (a.abs() + b.abs())
    return Enclosure(a + b, _up(rad))


def _weight(ts: dict, name: str) -> torch.Tensor:
    """The dense weight of linear map `name`; the enclosures read the densified IR (surrogates.densify)."""
    w = ts.get(f"{name}.weight")
    if w is None:
        raise BlockCertError(f"the enclosure needs a dense IR: {name!r} is stored as factors or int8 "
                             "(densify it first)")
    return w


def _heads(x: Enclosure, n: int, hd: int) -> Enclosure:
    def f(t: torch.Tensor) -> torch.Tensor:
        p, s, _ = t.shape
        return t.reshape(p, s, n, hd).transpose(1, 2)

    return Enclosure(f(x.mid), f(x.rad))


def _repeat(x: Enclosure, groups: int) -> Enclosure:
    return Enclosure(x.mid.repeat_interleave(groups, 1), x.rad.repeat_interleave(groups, 1))


def attention(ir: BlockIR, h: Enclosure, mask: torch.Tensor, positions: torch.Tensor) -> Enclosure:
    spec, ts = ir.spec.attention, ir.tensors
    n, n_kv, hd = spec.num_heads, spec.num_kv_heads, spec.head_dim
    # Biases wherever the IR stores them (Qwen2: on q, k, v and not on o), exactly as the interpreter's `_linear`.
    q = _heads(linear(h, _weight(ts, "attn.q"), ts.get("attn.q.bias")), n, hd)
    k = _heads(linear(h, _weight(ts, "attn.k"), ts.get("attn.k.bias")), n_kv, hd)
    v = _heads(linear(h, _weight(ts, "attn.v"), ts.get("attn.v.bias")), n_kv, hd)
    if spec.qk_norm is not None:  # Qwen3 / Gemma 3: per head over the head dimension, before RoPE (as interpreted)
        q = norm_layer(spec.qk_norm, ts, "attn.q_norm", q)
        k = norm_layer(spec.qk_norm, ts, "attn.k_norm", k)
    if spec.rope:  # the block's own tables: a per-layer rotary base (Gemma 3 local / global) is already in them
        cos = ts["rope.cos"].to(F64)[positions][:, None]
        sin = ts["rope.sin"].to(F64)[positions][:, None]
        q, k = rope(q, cos, sin), rope(k, cos, sin)
    if spec.heads is not None:  # pruned: the IR says which stored KV head each kept query head reads
        index = torch.tensor(spec.heads.kv_of_head, dtype=torch.long)
        k = Enclosure(k.mid.index_select(1, index), k.rad.index_select(1, index))
        v = Enclosure(v.mid.index_select(1, index), v.rad.index_select(1, index))
    else:
        k, v = _repeat(k, n // n_kv), _repeat(v, n // n_kv)
    raw = matmul(q, Enclosure(k.mid.transpose(2, 3), k.rad.transpose(2, 3)))
    # The score scale is the IR's float `scaling` (Gemma 3: query_pre_attn_scalar^-1/2, Llama: head_dim^-1/2),
    # taken as the exact real number that float is; the replay's float32 rounding of it is forward error.
    sc = float(spec.scaling)
    scores = Enclosure(raw.mid * sc, _up(raw.rad * abs(sc) + _U * (raw.mid * sc).abs()))
    probs = softmax(scores, mask[:, None])
    o = matmul(probs, v)
    p, t = h.mid.shape[:2]

    def merge(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(p, t, n * hd)

    return linear(Enclosure(merge(o.mid), merge(o.rad)), _weight(ts, "attn.o"), ts.get("attn.o.bias"))


def activation(name: str, x: Enclosure) -> Enclosure:
    lo, hi = act_range(name, *outward(x.mid, x.rad))  # exact range over the interval, widened
    return Enclosure(0.5 * (lo + hi), _up(0.5 * (hi - lo) + _U * (lo.abs() + hi.abs())))


def mlp(ir: BlockIR, h: Enclosure) -> Enclosure:
    spec, ts = ir.spec.mlp, ir.tensors
    up = linear(h, _weight(ts, "mlp.up"), ts.get("mlp.up.bias"))
    if spec.kind == "gated":  # Gemma 3: gelu_pytorch_tanh(gate) ⊙ up; its range rule is in activations.py
        mid = mul(activation(spec.activation, linear(h, _weight(ts, "mlp.gate"), ts.get("mlp.gate.bias"))), up)
    else:
        mid = activation(spec.activation, up)
    return linear(mid, _weight(ts, "mlp.down"), ts.get("mlp.down.bias"))


# The enclosure of each op the registry (core/ops.py) knows, walked by the same `walk` as the interpreter.
ENCLOSURES = {
    "norm": lambda ir, op, h, mask, positions: norm_layer(getattr(ir.spec, op.weights), ir.tensors, op.weights, h),
    "attention": lambda ir, op, h, mask, positions: attention(ir, h, mask, positions),
    "mlp": lambda ir, op, h, mask, positions: mlp(ir, h),
}


def run_block_enclosed(ir: BlockIR, x: Enclosure, valid: torch.Tensor, positions: torch.Tensor) -> Enclosure:
    """The block on every input in x ([P, T, d]), enclosed: the interpreter's op sequence, in mid ± rad."""
    # The mask is a discrete constant of the block, not a value to enclose: it is the interpreter's own
    # `attention_mask` (the declared pattern, causal or inverted, narrowed by the sliding window if any, and by
    # key validity), so the enclosure cannot disagree with the replay about which keys a query sees. Masked
    # keys get probability exactly 0 (softmax below), as their additive finfo.min gives in the interpreter.
    mask = attention_mask(ir.spec.attention, valid)

    def bind(rule):
        return lambda op, h: rule(ir, op, h, mask, positions)

    return walk(ir.spec, {name: bind(rule) for name, rule in ENCLOSURES.items()}, add, x)


def token_distance_upper(a: Enclosure, b: Enclosure, valid: torch.Tensor) -> torch.Tensor:
    """Per prompt and token, ≥ ‖a_t − b_t‖₂ over the exact values ([P, T]; 0 at padding).

    ‖a − b‖ ≤ ‖mid_a − mid_b‖ + ‖rad_a + rad_b‖: the subtraction, the d-term sums of squares and the square
    roots round by at most γ_{d+2} relative each, which the factors 1 + γ_{d+2} (and _up) cover."""
    d = a.mid.shape[-1]
    centre = (a.mid - b.mid).norm(dim=-1) * (1 + _g(d + 2))
    spread = (a.rad + b.rad).norm(dim=-1) * (1 + _g(d + 2))
    return torch.where(valid, _up(centre + spread), torch.zeros((), dtype=F64))


def distance_upper(a: Enclosure, b: Enclosure, valid: torch.Tensor) -> torch.Tensor:
    """Per prompt, ≥ max_t ‖a_t − b_t‖₂ over the exact values ([P]; padding ignored)."""
    return token_distance_upper(a, b, valid).amax(-1)


def distance_lower(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per prompt, ≤ max_t ‖a_t − b_t‖₂ for exactly representable a, b ([P])."""
    d = a.shape[-1]
    e = (a.to(F64) - b.to(F64)).norm(dim=-1) * (1 - _g(d + 2))
    return torch.where(valid, e, torch.zeros((), dtype=F64)).amax(-1)


def pointwise_ratios(ir: BlockIR, x: torch.Tensor, x_hat: torch.Tensor, valid: torch.Tensor,
                     positions: torch.Tensor) -> torch.Tensor:
    """Per prompt ([P], float64), an upper bound on dist(B̂(x̂), B̂(x)) / dist(x̂, x); 0 where x̂ = x.

    0 is sound there: the pointwise hypothesis dist(B̂(x̂), B̂(x)) ≤ L·dist(x̂, x) holds for every L when x̂ = x.
    """
    den = distance_lower(x_hat, x, valid)
    out = torch.zeros_like(den)
    moved = den > 0
    if not bool(moved.any()):
        return out
    keep = torch.nonzero(moved).flatten()  # prompts with x̂ = x contribute nothing
    v, pos = valid[keep], positions[keep]
    a = run_block_enclosed(ir, Enclosure.point(x_hat[keep]), v, pos)
    b = run_block_enclosed(ir, Enclosure.point(x[keep]), v, pos)
    out[keep] = distance_upper(a, b, v) / den[keep] * _NUDGE
    return out
