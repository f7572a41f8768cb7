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
    t = valid.shape[-1]
    tri = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    return tri[None] & valid[:, None, :]


def _norm(spec: NormSpec, ts: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    w = ts[f"{name}.weight"]
    if spec.kind == "layer":
        return F.layer_norm(x, (x.shape[-1],), w, ts.get(f"{name}.bias"), spec.eps)
    h = x.to(torch.float32) if spec.compute_dtype == "float32" else x
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + spec.eps)
    return w * h.to(x.dtype)


def _linear(ts: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, ts[f"{name}.weight"], ts.get(f"{name}.bias"))


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
    if spec.rope:
        table = ts["rope.cos"]
        if int(positions.max()) >= table.shape[0]:
            raise BlockCertError(
                f"position {int(positions.max())} is beyond the IR's rotary table ({table.shape[0]} positions)"
            )
        cos, sin = table[positions][:, None], ts["rope.sin"][positions][:, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
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


def _mlp(spec: MlpSpec, ts: dict, h: torch.Tensor) -> torch.Tensor:
    if spec.kind == "gated":
        gate = activation(spec.activation, _linear(ts, "mlp.gate", h))
        return _linear(ts, "mlp.down", gate * _linear(ts, "mlp.up", h))
    return _linear(ts, "mlp.down", activation(spec.activation, _linear(ts, "mlp.up", h)))


@dataclass
class _Context:
    mask: torch.Tensor
    positions: torch.Tensor
    argmax: torch.Tensor | None = None


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
    return _mlp(spec.mlp, ts, h)


register(RESIDUAL, "close the residual branch: residual + h")(None)


def _bind(forward, spec: BlockSpec, ts: dict, ctx: _Context):
    return lambda op, h: forward(spec, op, ts, h, ctx)


def run_block_with_decisions(
    ir: BlockIR, x: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, Decisions]:
    spec, ts = ir.spec, ir.tensors
    ctx = _Context(mask=causal_mask(valid.to(x.device)), positions=positions.to(x.device))
    step = {name: _bind(d.forward, spec, ts, ctx) for name, d in OPS.items() if d.forward is not None}
    out = walk(spec, step, torch.add, x)
    return out, Decisions(mask=ctx.mask, argmax=ctx.argmax)


def run_block(ir: BlockIR, x: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Replay the surrogate block on residual stream `x` [P, T, d]."""
    return run_block_with_decisions(ir, x, valid, positions)[0]
