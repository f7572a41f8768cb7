"""A block's weights prepared for bounding: norm gains folded into the next linear map, float64, plus the
spectral-norm upper bounds every derivation reuses.

Folding: a norm layer outputs w ⊙ n(y) + b with n the unit-gain normalisation; the linear map after it
sees W(w ⊙ n + b) + c = (W diag(w)) n + (W b + c). Bounding ‖W diag(w)‖ directly is much tighter than
‖W‖·max|w|, and it leaves a single nonlinearity, n, whose Jacobian is known exactly (norm.py).
float32 × float32 products are exact in float64 (48 ≤ 53 significand bits), so the folded weights are
exactly the real-valued maps the block computes; `prepare_block` checks this (`_exact_fold`) and refuses an
IR whose products would round. The folded biases W b + c do round (a (d+1)-term dot product); each carries
its enclosure radius γ_{d+1}(|W||b| + |c|) (`b*_rad`), which the center enclosures add (attention.py, mlp.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockcert.bounds.spectral import (
    frobenius_sq_upper,
    gamma_up,
    grow,
    product_upper,
    psd_factor,
    spectral_upper,
    sqrt_up,
)
from blockcert.core.exact import float_up
from blockcert.core.ir import BlockIR
from blockcert.errors import BlockCertError

F64 = torch.float64


@dataclass(frozen=True)
class NormParams:
    kind: str  # "rms" | "layer"
    eps: float


@dataclass(frozen=True)
class PreparedBlock:
    index: int
    family: str
    d: int
    n_heads: int
    n_kv: int
    head_dim: int
    scaling: float
    norm1: NormParams
    norm2: NormParams
    # attention, folded: per query head h / key-value group g
    wq: torch.Tensor  # [H, hd, d]
    bq: torch.Tensor  # [H, hd]
    wk: torch.Tensor  # [G, hd, d]
    bk: torch.Tensor  # [G, hd]
    wv: torch.Tensor  # [G, hd, d]
    bv: torch.Tensor  # [G, hd]
    wo: torch.Tensor  # [d, H·hd]
    bo: torch.Tensor  # [d]
    rope_cos: torch.Tensor | None  # [positions, hd]
    rope_sin: torch.Tensor | None
    rope_gain: float  # ≥ the spectral norm of every rotary 2×2 block (1 up to the table's float rounding)
    # spectral-norm upper bounds
    nq: torch.Tensor  # [H] ‖W_q^h diag(w1)‖
    nk: torch.Tensor  # [G]
    nv: torch.Tensor  # [G]
    no: torch.Tensor  # [H] ‖W_o^h‖ (the columns of W_o that head h writes through)
    n_ov: torch.Tensor  # [H] ‖W_o^h W_v^{g(h)} diag(w1)‖, the head's OV circuit
    n_o: float  # ‖W_o‖
    # MLP, folded
    mlp_kind: str  # "gated" | "plain"
    activation: str
    wg: torch.Tensor | None  # [m, d] (gated only)
    bg: torch.Tensor | None
    wu: torch.Tensor  # [m, d]
    bu: torch.Tensor
    wd: torch.Tensor  # [d, m]
    bd: torch.Tensor
    n_d: float  # ‖W_d‖
    # head-dimension Gram matrices the attention bound is computed with
    wq_gram: torch.Tensor  # [H, hd, hd] W_q^h W_q^hᵀ
    wq_factor: torch.Tensor  # [H, hd, hd] L with L Lᵀ ⪰ W_q^h W_q^hᵀ
    wk_gram: torch.Tensor  # [G, hd, hd]
    o_gram: torch.Tensor  # [H, hd, hd] W_o^hᵀ W_o^h
    # Rounding allowances of the center enclosures (attention.py, mlp.py).
    bq_rad: torch.Tensor  # [H, hd] ≥ |fl(folded bias) − exact folded bias|, elementwise
    bk_rad: torch.Tensor  # [G, hd]
    bv_rad: torch.Tensor  # [G, hd]
    bg_rad: torch.Tensor | None  # [m] (gated only)
    bu_rad: torch.Tensor  # [m]
    fq: torch.Tensor  # [H] ≥ ‖W_q^h‖_F² (the Gram matrices' rounding is γ_d times it, in spectral norm)
    fk: torch.Tensor  # [G] ≥ ‖W_k^g‖_F²
    fo: torch.Tensor  # [H] ≥ ‖W_o^h‖_F²
    nl: torch.Tensor  # [H] ≥ ‖L_h‖₂ (L_h = wq_factor[h])
    lf: torch.Tensor  # [H] ≥ ‖L_h‖_F
    wd_frob: float  # ≥ ‖W_d‖_F

    @property
    def group_of_head(self) -> torch.Tensor:
        return torch.arange(self.n_heads) // (self.n_heads // self.n_kv)


def _get(ts: dict, name: str, index: int) -> torch.Tensor:
    t = ts.get(name)
    if t is None:
        raise BlockCertError(f"block {index}: the IR lacks tensor {name!r}; re-extract the block")
    return t.detach().to(device="cpu", dtype=F64)


def _opt(ts: dict, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    t = ts.get(name)
    return torch.zeros(shape, dtype=F64) if t is None else t.detach().to(device="cpu", dtype=F64)


def rope_gain(cos: torch.Tensor, sin: torch.Tensor) -> float:
    """max over positions and pairs of ‖[[c_i, −s_i], [s_{i+h}, c_{i+h}]]‖₂ (the interpreter's rotate-half).

    Exactly 1 for true rotations; the stored float32 tables are off by ~1e-7, which this accounts for.
    """
    h = cos.shape[-1] // 2
    a, b, c, d = cos[:, :h], -sin[:, :h], sin[:, h:], cos[:, h:]
    # σ_max² = (s + √(s² − 4 det²))/2 with s = ‖B‖_F². For a near-rotation s² − 4 det² cancels (both ≈ 4),
    # and its float64 rounding (≈ 16u absolute) would move √ by ≈ 4e-8: use the exact factorisation
    # s² − 4 det² = ((a − d)² + (b + c)²)·((a + d)² + (b − c)²), a product of nonnegative terms.
    s = a * a + b * b + c * c + d * d
    disc = ((a - d) ** 2 + (b + c) ** 2) * ((a + d) ** 2 + (b - c) ** 2)
    sigma = torch.sqrt((s + torch.sqrt(disc)) / 2)
    # Every operation acts on nonnegative values (a − d etc. are single roundings of exact inputs, relative
    # error ≤ u): at most 12 roundings along any path (`grow`).
    return float(sigma.max()) * grow(12)


def _sig_bits(t: torch.Tensor) -> int:
    """The most significant bits any nonzero entry of a float64 tensor needs (0 for an all-zero tensor)."""
    t = t[(t != 0) & torch.isfinite(t)]
    if t.numel() == 0:
        return 0
    mant, _ = torch.frexp(t.abs())  # t = mant·2^e, mant ∈ [1/2, 1)
    m = torch.ldexp(mant, torch.full_like(mant, 53, dtype=torch.int32)).to(torch.int64)  # exact 53-bit integer
    low = m & -m  # lowest set bit
    tz = torch.frexp(low.to(torch.float64))[1] - 1
    return int((53 - tz).max())


def _exact_fold(w: torch.Tensor, w_in: torch.Tensor, name: str, index: int) -> None:
    """W·diag(w_in) is formed exactly in float64 when the two factors' significands fit 53 bits together and no
    product falls below the normal range (float32 or bf16 weights always do)."""
    bits = _sig_bits(w) + _sig_bits(w_in)
    prods = w.abs() * w_in.abs()[None, :]
    tiny = bool(((prods < 2.0**-960) & (prods != 0)).any())
    if bits > 53 or tiny:
        raise BlockCertError(f"block {index}: folding the norm gain into {name} would round in float64 "
                             f"({bits} significand bits); the bounds need the block's weights in float32 or narrower")


def _bias_rad(w: torch.Tensor, b_in: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """≥ |fl(W b + c) − (W b + c)| elementwise: γ_{d+1}(|W||b| + |c|) (Higham Thm 3.1; 0 when b = 0, the sum being
    W·0 + c = c exactly). The allowance itself is a (d+2)-deep sum of nonnegative terms, rounded up by `grow`."""
    if not bool((b_in != 0).any()):
        return torch.zeros_like(c)
    n = w.shape[1]
    return gamma_up(n + 1) * (w.abs() @ b_in.abs() + c.abs()) * grow(n + 3)


def _frob_up(w: torch.Tensor) -> float:
    return float_up(frobenius_sq_upper(w))


def _frob_norm_up(w: torch.Tensor) -> float:
    return float_up(sqrt_up(frobenius_sq_upper(w)))


def prepare_block(ir: BlockIR) -> PreparedBlock:
    spec, ts, i = ir.spec, ir.tensors, ir.spec.block_index
    d, att = spec.hidden_size, spec.attention
    n_h, n_kv, hd = att.num_heads, att.num_kv_heads, att.head_dim
    w1, w2 = _get(ts, "attn_norm.weight", i), _get(ts, "mlp_norm.weight", i)
    b1, b2 = _opt(ts, "attn_norm.bias", (d,)), _opt(ts, "mlp_norm.bias", (d,))

    def fold(name: str, w_in: torch.Tensor, b_in: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = _get(ts, f"{name}.weight", i)
        if w.shape != (rows, d):
            raise BlockCertError(f"block {i}: {name}.weight has shape {tuple(w.shape)}, expected {(rows, d)}")
        _exact_fold(w, w_in, name, i)
        c = _opt(ts, f"{name}.bias", (rows,))
        return w * w_in, w @ b_in + c

    def fold_rad(name: str, b_in: torch.Tensor, rows: int) -> torch.Tensor:
        return _bias_rad(_get(ts, f"{name}.weight", i), b_in, _opt(ts, f"{name}.bias", (rows,)))

    wq, bq = fold("attn.q", w1, b1, n_h * hd)
    wk, bk = fold("attn.k", w1, b1, n_kv * hd)
    wv, bv = fold("attn.v", w1, b1, n_kv * hd)
    wo = _get(ts, "attn.o.weight", i)
    bo = _opt(ts, "attn.o.bias", (d,))
    wq, wk, wv = wq.view(n_h, hd, d), wk.view(n_kv, hd, d), wv.view(n_kv, hd, d)
    bq, bk, bv = bq.view(n_h, hd), bk.view(n_kv, hd), bv.view(n_kv, hd)
    groups = n_h // n_kv
    wd = _get(ts, "mlp.down.weight", i)
    m = wd.shape[1]
    if spec.mlp.kind == "gated":
        wg, bg = fold("mlp.gate", w2, b2, m)
    else:
        wg = bg = None
    wu, bu = fold("mlp.up", w2, b2, m)
    cos = sin = None
    gain = 1.0
    if att.rope:
        cos, sin = _get(ts, "rope.cos", i), _get(ts, "rope.sin", i)
        gain = rope_gain(cos, sin)
    heads = range(n_h)
    wo_h = [wo[:, h * hd : (h + 1) * hd] for h in heads]
    factors = [psd_factor(wq[h]) for h in heads]
    return PreparedBlock(
        index=i, family=spec.family, d=d, n_heads=n_h, n_kv=n_kv, head_dim=hd, scaling=float(att.scaling),
        norm1=NormParams(spec.attn_norm.kind, float(spec.attn_norm.eps)),
        norm2=NormParams(spec.mlp_norm.kind, float(spec.mlp_norm.eps)),
        wq=wq, bq=bq, wk=wk, bk=bk, wv=wv, bv=bv, wo=wo, bo=bo,
        rope_cos=cos, rope_sin=sin, rope_gain=gain,
        nq=torch.tensor([spectral_upper(wq[h]) for h in heads], dtype=F64),
        nk=torch.tensor([spectral_upper(wk[g]) for g in range(n_kv)], dtype=F64),
        nv=torch.tensor([spectral_upper(wv[g]) for g in range(n_kv)], dtype=F64),
        no=torch.tensor([spectral_upper(w) for w in wo_h], dtype=F64),
        n_ov=torch.tensor([product_upper(wo_h[h], wv[h // groups]) for h in heads], dtype=F64),
        n_o=spectral_upper(wo),
        mlp_kind=spec.mlp.kind, activation=spec.mlp.activation,
        wg=wg, bg=bg, wu=wu, bu=bu, wd=wd, bd=_opt(ts, "mlp.down.bias", (d,)),
        n_d=spectral_upper(wd),
        wq_gram=wq @ wq.transpose(1, 2),
        wq_factor=torch.stack(factors),
        wk_gram=wk @ wk.transpose(1, 2),
        o_gram=torch.stack([w.T @ w for w in wo_h]),
        bq_rad=fold_rad("attn.q", b1, n_h * hd).view(n_h, hd),
        bk_rad=fold_rad("attn.k", b1, n_kv * hd).view(n_kv, hd),
        bv_rad=fold_rad("attn.v", b1, n_kv * hd).view(n_kv, hd),
        bg_rad=fold_rad("mlp.gate", b2, m) if spec.mlp.kind == "gated" else None,
        bu_rad=fold_rad("mlp.up", b2, m),
        fq=torch.tensor([_frob_up(wq[h]) for h in heads], dtype=F64),
        fk=torch.tensor([_frob_up(wk[g]) for g in range(n_kv)], dtype=F64),
        fo=torch.tensor([_frob_up(w) for w in wo_h], dtype=F64),
        nl=torch.tensor([spectral_upper(f) for f in factors], dtype=F64),
        lf=torch.tensor([_frob_norm_up(f) for f in factors], dtype=F64),
        wd_frob=_frob_norm_up(wd),
    )
