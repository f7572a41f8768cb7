"""The surrogate IR: a declared op sequence plus plain named tensors.

`ir.json` holds the `BlockSpec` (what to compute, in which order, with which constants); `ir.safetensors`
holds the tensors. Every linear map is stored as `[out, in]` and applied as `x @ W.T + b`, whatever the
source layout (GPT-2's Conv1D weights are transposed on extraction, exactly).

A linear map `NAME` is stored in one of three forms, and the interpreter applies exactly the form stored:
- `NAME.weight` [out, in]: dense;
- `NAME.u` [out, R] and `NAME.v` [R, in]: low rank, applied as two products `(x @ v.T) @ u.T`;
- `NAME.q8` [out, in] int8 and `NAME.scale` [out]: symmetric per-output-channel int8, dequantised to the
  IR's dtype as `q8 * scale[:, None]` when applied.
`NAME.bias` [out] is optional in every form. Pruned heads and neurons are simply absent from the tensors:
`AttentionSpec.heads` and `MlpSpec.neurons` say which native heads / neurons the stored ones are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from blockcert.core.schema import Frozen

IR_FORMAT = "blockcert.ir/1"
# Rotary tables cover positions [0, ROPE_TABLE_MAX) (or the model's context, if shorter), so a
# surrogate can be replayed on longer prompts than the ones it was extracted with.
ROPE_TABLE_MAX = 2048


class NormSpec(Frozen):
    kind: Literal["rms", "layer"]
    eps: float
    # Llama's RMSNorm upcasts to float32 internally whatever the model dtype; the IR says so.
    compute_dtype: Literal["float32"] | None = None
    # Gemma's RMSNorm: the weight is applied as (1 + w), in float32, before the cast back (HF Gemma3RMSNorm).
    unit_offset: bool = False


class HeadSelection(Frozen):
    """Which of the native block's heads a pruned attention keeps, in stored order.

    Grouped-query attention: query heads are pruned one by one, and a KV head is kept exactly when some
    kept query head reads it (a KV group disappears only when all of its query heads do). `kv_of_head[j]`
    is the stored KV head that stored query head j reads, so the interpreter never infers the grouping.
    """

    native_heads: int
    native_kv_heads: int
    kept: tuple[int, ...]  # native query-head indices, ascending
    kept_kv: tuple[int, ...]  # native KV-head indices, ascending
    kv_of_head: tuple[int, ...]  # per stored query head: index into the stored KV heads


# Mask patterns an IR may declare. "causal": query t sees valid keys at positions <= t (the native
# block's). "inverted": query t sees valid keys at positions >= t, the ablation of paper Table 3
# (the transposed causal mask, so that no query is left without a key).
PATTERNS = ("causal", "inverted")


class AttentionSpec(Frozen):
    num_heads: int  # stored query heads
    num_kv_heads: int  # stored KV heads
    head_dim: int
    scaling: float
    pattern: Literal["causal", "inverted"] = "causal"
    rope: bool
    bias: bool
    softmax_dtype: Literal["float32"] | None = None
    heads: HeadSelection | None = None  # None: every native head, in native order
    # A sliding window: query t sees keys at positions > t - window (HF's sliding_window mask); None: full.
    # It is a discrete decision of the block, so it is part of the declared mask and of path coverage.
    window: int | None = None
    # Qwen3 / Gemma 3: an RMSNorm of each query and key head over the head dimension, before RoPE
    # (tensors attn.q_norm.weight and attn.k_norm.weight).
    qk_norm: NormSpec | None = None


class NeuronSelection(Frozen):
    native: int  # the native MLP's intermediate size
    kept: tuple[int, ...]  # native neuron indices of the stored rows of up/gate (columns of down), ascending


class MlpSpec(Frozen):
    kind: Literal["gated", "plain"]
    activation: Literal["silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"]
    bias: bool
    neurons: NeuronSelection | None = None  # None: every native neuron


class Derivation(Frozen):
    """How a surrogate's tensors were derived from the native block: part of what is certified."""

    kind: str  # the registered kind (surrogates/)
    args: str  # its argument text as given
    method: str  # what was done, in words, with what was decided per tensor
    # Trace-ranked kinds: what the ranking was measured on (the run's own certification prompts,
    # by the SHA-256 of their token ids) and the score of every candidate, native order.
    ranked_on: str | None = None
    scores: tuple[float, ...] | None = None
    # A derivation applied on top of another (low-rank attention, then pruned neurons): the earlier one.
    base: Derivation | None = None


class LinearForm(Frozen):
    """How one linear map is stored (module docstring): dense, two rank-`rank` factors, or int8 + scales."""

    form: Literal["dense", "lowrank", "int8"]
    rank: int | None = None  # lowrank only


class Op(Frozen):
    op: str  # a name in the op registry (core/ops.py)
    weights: str | None = None


class BlockSpec(Frozen):
    format: Literal["blockcert.ir/1"] = IR_FORMAT
    family: str  # the architecture adapter that wrote it (arch/); the interpreter never branches on it
    block_index: int
    # How the tensors were derived from the native block: a kind of the surrogate registry
    # (surrogates/), "exact" for a copy.
    surrogate: str = "exact"
    derivation: Derivation | None = None  # None for the plain copies (exact, bf16, fp16)
    # Linear maps not stored dense, by name ("attn.q", "mlp.down", ...): the file must hold exactly the
    # tensors of the declared form (tensor_layout), so the spec, not the file, says what is applied.
    linears: dict[str, LinearForm] = {}
    hidden_size: int
    attn_norm: NormSpec
    attention: AttentionSpec
    mlp_norm: NormSpec
    mlp: MlpSpec
    # Gemma 3's sandwich norms: applied to the attention / MLP output before the residual add; named in `ops`.
    post_attn_norm: NormSpec | None = None
    post_mlp_norm: NormSpec | None = None
    # residual <- residual + (result of the ops since the last `residual`)
    ops: tuple[Op, ...] = (
        Op(op="norm", weights="attn_norm"),
        Op(op="attention", weights="attn"),
        Op(op="residual"),
        Op(op="norm", weights="mlp_norm"),
        Op(op="mlp", weights="mlp"),
        Op(op="residual"),
    )


@dataclass(frozen=True)
class BlockIR:
    spec: BlockSpec
    tensors: dict[str, torch.Tensor]

    def to(self, device=None, dtype=None) -> BlockIR:
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return BlockIR(self.spec, {k: cast(v) for k, v in self.tensors.items()})


LINEARS = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down")
# name -> (safetensors dtype tag, shape); a None dimension is free (only its rank is fixed).
Layout = dict[str, tuple[str, tuple[int | None, ...]]]


def native_heads(spec: BlockSpec) -> int:
    """The native block's query-head count (traces record a decision per native head)."""
    a = spec.attention
    return a.num_heads if a.heads is None else a.heads.native_heads


def _shapes(spec: BlockSpec) -> dict[str, tuple[int | None, int | None]]:
    d, a = spec.hidden_size, spec.attention
    q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    inner = None if spec.mlp.neurons is None else len(spec.mlp.neurons.kept)
    out = {"attn.q": (q, d), "attn.k": (kv, d), "attn.v": (kv, d), "attn.o": (d, q), "mlp.up": (inner, d),
           "mlp.down": (d, inner)}
    if spec.mlp.kind == "gated":
        out["mlp.gate"] = (inner, d)
    return out


def tensor_layout(spec: BlockSpec, f: str) -> tuple[Layout, Layout]:
    """The tensors a spec implies (required, optional), floats tagged `f` ("F32"/"F64"): every linear map in
    its declared form (`spec.linears`), the norms, the rotary tables when the attention uses RoPE."""
    d = spec.hidden_size
    want: Layout = {"attn_norm.weight": (f, (d,)), "mlp_norm.weight": (f, (d,))}
    opt: Layout = {"attn_norm.bias": (f, (d,)), "mlp_norm.bias": (f, (d,))}
    for name, (o, i) in _shapes(spec).items():
        form = spec.linears.get(name, LinearForm(form="dense"))
        if form.form == "dense":
            want[f"{name}.weight"] = (f, (o, i))
        elif form.form == "lowrank":
            want[f"{name}.u"], want[f"{name}.v"] = (f, (o, form.rank)), (f, (form.rank, i))
        else:
            want[f"{name}.q8"], want[f"{name}.scale"] = ("I8", (o, i)), (f, (o,))
        opt[f"{name}.bias"] = (f, (o,))
    for name in ("post_attn_norm", "post_mlp_norm"):
        if getattr(spec, name) is not None:
            want[f"{name}.weight"] = (f, (d,))
    if spec.attention.qk_norm is not None:
        want["attn.q_norm.weight"] = (f, (spec.attention.head_dim,))
        want["attn.k_norm.weight"] = (f, (spec.attention.head_dim,))
    if spec.attention.rope:
        want["rope.cos"] = (f, (None, spec.attention.head_dim))
        want["rope.sin"] = (f, (None, spec.attention.head_dim))
    return want, opt


def layout_problem(spec: BlockSpec, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """What is inconsistent between a spec and tensors that already match `tensor_layout`, or None: the MLP's
    free intermediate size must agree across its maps, the rotary tables in shape, a head selection with
    the stored head counts, and every declared form must name a map the block has."""
    unknown = sorted(set(spec.linears) - set(_shapes(spec)))
    if unknown:
        return f"linears declares {', '.join(unknown)}, which the block does not have"
    if any(f.form == "lowrank" and not (f.rank and f.rank > 0) for f in spec.linears.values()):
        return "a lowrank linear map declares no positive rank"
    rows = []
    for name in ("mlp.up", "mlp.gate", "mlp.down"):
        for key, axis in ((".weight", 0), (".u", 0), (".q8", 0), (".bias", 0)) if name != "mlp.down" else (
                (".weight", 1), (".v", 1), (".q8", 1)):
            if name + key in shapes:
                rows.append((name + key, shapes[name + key][axis]))
    if len({n for _, n in rows}) > 1:
        return "the MLP's maps disagree on the intermediate size (" + ", ".join(f"{k} {n}" for k, n in rows) + ")"
    if spec.attention.rope and shapes.get("rope.cos") != shapes.get("rope.sin"):
        return "rope.cos and rope.sin differ in shape"
    h, a = spec.attention.heads, spec.attention
    if h is not None and not (len(h.kept) == a.num_heads and len(h.kept_kv) == a.num_kv_heads
                              and len(h.kv_of_head) == a.num_heads
                              and all(0 <= j < a.num_kv_heads for j in h.kv_of_head)
                              and all(0 <= k < h.native_heads for k in h.kept)
                              and all(0 <= k < h.native_kv_heads for k in h.kept_kv)):
        return "attention.heads does not match the stored head counts"
    if h is None and (a.num_kv_heads <= 0 or a.num_heads % a.num_kv_heads):
        return "num_heads is not a multiple of num_kv_heads"
    n = spec.mlp.neurons
    if n is not None and not all(0 <= k < n.native for k in n.kept):
        return "mlp.neurons names neurons beyond the native MLP"
    return None
