"""BlockCert's own interpreter: (IR, residual stream, key mask, positions) -> residual stream.

A pure function of its arguments. It never calls a Hugging Face module; it follows the op sequence the
IR declares and applies the stored tensors in a fixed order. Where the native implementation makes a
numerical choice (float32 RMSNorm and softmax in Llama, the additive mask value), the IR declares it
and the interpreter does the same, so an exact-copy surrogate replays to float precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from blockcert.core.ir import AttentionSpec, BlockIR, BlockSpec, MlpSpec, NormSpec, Op
from blockcert.core.ops import OPS, RESIDUAL, register, walk
from blockcert.errors import BlockCertError


@dataclass(frozen=True)
class Decisions:
    """The surrogate's discrete choices, for path coverage."""

    mask: torch.Tensor  # [P, T, T] bool: which keys each query may attend to
    argmax: torch.Tensor  # [P, H, T] int64: most-attended key position per head and query


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """[P, T] key validity -> [P, T, T] booleans: query t sees valid keys at positions <= t."""
    return pattern_mask("causal", valid)


def attention_mask(spec: AttentionSpec, valid: torch.Tensor) -> torch.Tensor:
    """The [P, T, T] mask an attention spec declares: its pattern, narrowed by its sliding window if any."""
    mask = pattern_mask(spec.pattern, valid)
    if spec.window is not None:
        t = valid.shape[-1]
        pos = torch.arange(t, device=valid.device)
        mask = mask & ((pos[:, None] - pos[None, :]) < spec.window)[None]  # keys j > t - window
    return mask


def pattern_mask(pattern: str, valid: torch.Tensor) -> torch.Tensor:
    """The [P, T, T] mask of a declared pattern (ir.PATTERNS): causal (keys <= t) or inverted (keys >= t)."""
    t = valid.shape[-1]
    ones = torch.ones(t, t, dtype=torch.bool, device=valid.device)
    if pattern == "causal":
        tri = ones.tril()
    elif pattern == "inverted":
        tri = ones.triu()
    else:
        raise BlockCertError(f"IR mask pattern {pattern!r} is not known to this BlockCert (causal, inverted)")
    return tri[None] & valid[:, None, :]


def _norm(spec: NormSpec, ts: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    w = ts[f"{name}.weight"]
    if spec.kind == "layer":
        return F.layer_norm(x, (x.shape[-1],), w, ts.get(f"{name}.bias"), spec.eps)
    h = x.to(torch.float32) if spec.compute_dtype == "float32" else x
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + spec.eps)
    if spec.unit_offset:  # Gemma: (x * (1 + w)) in the compute dtype, then the cast (Llama casts first)
        return (h * (1.0 + w.to(h.dtype))).to(x.dtype)
    return w * h.to(x.dtype)


def dequantise(q8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int8 weights [out, in] and per-output-channel scales [out] -> the dense weight in `dtype`.

    Every int8 value is exact in float32/float64, so the only rounding is the one product per entry,
    done in the dtype the block runs in; densify() calls this same function, so both agree bit for bit.
    """
    return q8.to(dtype) * scale.to(dtype)[:, None]


def _linear(ts: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply linear map `name` in the form the IR stores it (ir.py): dense, two factors, or int8."""
    bias = ts.get(f"{name}.bias")
    w = ts.get(f"{name}.weight")
    if w is not None:
        return F.linear(x, w, bias)
    if f"{name}.u" in ts:
        # Two products, never the dense product of the factors: R·(in+out) multiply-adds per token.
        return F.linear(F.linear(x, ts[f"{name}.v"]), ts[f"{name}.u"], bias)
    if f"{name}.q8" in ts:
        return F.linear(x, dequantise(ts[f"{name}.q8"], ts[f"{name}.scale"], x.dtype), bias)
    raise BlockCertError(f"IR stores no tensors for linear map {name!r} (.weight, .u/.v or .q8/.scale)")


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The MLP activation an IR names (`MlpSpec.activation`); the bounds evaluate this same function."""
    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_pytorch_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "gelu_new":
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * torch.pow(x, 3.0))))
    if name == "relu":
        return F.relu(x)
    raise ValueError(f"unsupported activation {name!r}")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _heads(x: torch.Tensor, n: int, hd: int) -> torch.Tensor:
    p, t, _ = x.shape
    return x.view(p, t, n, hd).transpose(1, 2)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    p, n_kv, t, hd = x.shape
    return x[:, :, None].expand(p, n_kv, groups, t, hd).reshape(p, n_kv * groups, t, hd)


def _attention(
    spec: AttentionSpec, ts: dict, h: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    n, n_kv, hd = spec.num_heads, spec.num_kv_heads, spec.head_dim
    q = _heads(_linear(ts, "attn.q", h), n, hd)
    k = _heads(_linear(ts, "attn.k", h), n_kv, hd)
    v = _heads(_linear(ts, "attn.v", h), n_kv, hd)
    if spec.qk_norm is not None:  # per head, over the head dimension, before RoPE
        q, k = _norm(spec.qk_norm, ts, "attn.q_norm", q), _norm(spec.qk_norm, ts, "attn.k_norm", k)
    if spec.rope:
        table = ts["rope.cos"]
        if int(positions.max()) >= table.shape[0]:
            raise BlockCertError(
                f"position {int(positions.max())} is beyond the IR's rotary table ({table.shape[0]} positions)"
            )
        cos, sin = table[positions][:, None], ts["rope.sin"][positions][:, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
    if spec.heads is not None:  # pruned: the IR says which stored KV head each kept query head reads
        index = torch.tensor(spec.heads.kv_of_head, device=k.device)
        k, v = k.index_select(1, index), v.index_select(1, index)
    else:
        k, v = _repeat_kv(k, n // n_kv), _repeat_kv(v, n // n_kv)
    scores = torch.matmul(q, k.transpose(2, 3)) * spec.scaling
    blocked = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    scores = scores + blocked.masked_fill(~mask, torch.finfo(scores.dtype).min)[:, None]
    if spec.softmax_dtype == "float32":
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    else:
        probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v).transpose(1, 2).reshape(h.shape[0], h.shape[1], n * hd)
    return _linear(ts, "attn.o", out), probs


def _mlp(spec: MlpSpec, ts: dict, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MLP output, its intermediate activations [P, T, I]: what neuron pruning ranks on)."""
    if spec.kind == "gated":
        mid = activation(spec.activation, _linear(ts, "mlp.gate", h)) * _linear(ts, "mlp.up", h)
    else:
        mid = activation(spec.activation, _linear(ts, "mlp.up", h))
    return _linear(ts, "mlp.down", mid), mid


@dataclass
class _Context:
    mask: torch.Tensor
    positions: torch.Tensor
    argmax: torch.Tensor | None = None
    keep_mid: bool = False
    mid: torch.Tensor | None = None  # the MLP's intermediate activations, when asked for


@register("norm", "RMSNorm or LayerNorm of the branch, with the compute dtype the IR declares")
def _norm_op(spec: BlockSpec, op: Op, ts: dict, h: torch.Tensor, ctx: _Context) -> torch.Tensor:
    return _norm(getattr(spec, op.weights), ts, op.weights, h)


@register("attention", "multi-head (grouped-query) attention under the declared mask pattern")
def _attention_op(spec: BlockSpec, op: Op, ts: dict, h: torch.Tensor, ctx: _Context) -> torch.Tensor:
    out, probs = _attention(spec.attention, ts, h, ctx.mask, ctx.positions)
    ctx.argmax = probs.argmax(dim=-1)
    return out


@register("mlp", "gated or plain MLP")
def _mlp_op(spec: BlockSpec, op: Op, ts: dict, h: torch.Tensor, ctx: _Context) -> torch.Tensor:
    out, mid = _mlp(spec.mlp, ts, h)
    if ctx.keep_mid:
        ctx.mid = mid
    return out


register(RESIDUAL, "close the residual branch: residual + h")(None)


def _bind(forward, spec: BlockSpec, ts: dict, ctx: _Context):
    return lambda op, h: forward(spec, op, ts, h, ctx)


def _run(ir: BlockIR, x: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor, keep_mid: bool):
    spec, ts = ir.spec, ir.tensors
    mask = attention_mask(spec.attention, valid.to(x.device))
    ctx = _Context(mask=mask, positions=positions.to(x.device), keep_mid=keep_mid)
    step = {name: _bind(d.forward, spec, ts, ctx) for name, d in OPS.items() if d.forward is not None}
    return walk(spec, step, torch.add, x), ctx


def run_block_with_decisions(
    ir: BlockIR, x: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, Decisions]:
    out, ctx = _run(ir, x, valid, positions, keep_mid=False)
    return out, Decisions(mask=ctx.mask, argmax=ctx.argmax)


def mlp_activations(ir: BlockIR, x: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The MLP's intermediate activations [P, T, I] when the block runs on `x` (for neuron ranking)."""
    _, ctx = _run(ir, x, valid, positions, keep_mid=True)
    if ctx.mid is None:
        raise BlockCertError("the IR runs no mlp op: there are no neurons to rank")
    return ctx.mid


def run_block(ir: BlockIR, x: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Replay the surrogate block on residual stream `x` [P, T, d]."""
    return run_block_with_decisions(ir, x, valid, positions)[0]
