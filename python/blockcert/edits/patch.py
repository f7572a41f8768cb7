"""Declarative edit patches and their application to a block's IR (paper §7).

A patch is data: `{"kind": "scale_mlp", "block": 15, "alpha": 0.33}` and its siblings below. Applying one
is a pure function of (patch, IR[, another block's IR][, the patch's own tensors]) that returns a *new*
IR: the certified IR is never modified in place (tensors are copied before they change), so the edit gets
its own hash and the certified artifact keeps its own.

The edited IR keeps the certified spec unchanged where the edit is expressible in the tensors alone
(scaling, rank one), so the interpreter replays it with the certified op sequence; a parameter that
leaves the block unchanged (α = 1) leaves every tensor untouched, so the edited IR is byte for byte the
certified one and the edit is an exact no-op, not one up to rounding.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import torch
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from blockcert.core.ir import BlockIR
from blockcert.core.schema import Frozen
from blockcert.errors import BlockCertError

FINITE = Annotated[float, Field(allow_inf_nan=False)]


class ScaleMlp(Frozen):
    """The MLP branch's output becomes α·MLP(x): α = 0 removes the MLP, α = 1 leaves it as it is."""

    kind: Literal["scale_mlp"]
    block: int = Field(ge=0)
    alpha: FINITE


class ScaleHeads(Frozen):
    """Each listed attention head's contribution becomes α times itself (α = 0: the heads are zeroed)."""

    kind: Literal["scale_heads"]
    block: int = Field(ge=0)
    heads: tuple[int, ...] = Field(min_length=1)  # native head indices
    alpha: FINITE = 0.0

    @field_validator("heads")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 0 for h in v) or len(set(v)) != len(v):
            raise ValueError("heads must be distinct non-negative indices")
        return v


class Swap(Frozen):
    """Block `block`'s MLP (or attention) is replaced by block `source`'s, tensors and declaration alike."""

    kind: Literal["swap"]
    block: int = Field(ge=0)
    part: Literal["mlp", "attention"]
    source: int = Field(ge=0)


class RankOne(Frozen):
    """W ← W + u vᵀ on an MLP output matrix (the form ROME-style edits take); u [out] and v [in] are the
    tensors named `u` and `v` of the safetensors file `tensors`, a path relative to the patch file."""

    kind: Literal["rank_one"]
    block: int = Field(ge=0)
    matrix: Literal["mlp.down"] = "mlp.down"
    tensors: str = Field(min_length=1)


Patch = Annotated[ScaleMlp | ScaleHeads | Swap | RankOne, Field(discriminator="kind")]
KINDS = ("scale_mlp", "scale_heads", "swap", "rank_one")
_ADAPTER = TypeAdapter(Patch)


def parse_patch(obj: object, what: str) -> ScaleMlp | ScaleHeads | Swap | RankOne:
    """A patch from parsed JSON, strictly (no coercion of "15" to 15); one error line otherwise."""
    if not isinstance(obj, dict) or obj.get("kind") not in KINDS:
        got = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise BlockCertError(f"{what}: unknown patch kind {got!r}; use one of {', '.join(KINDS)}")
    try:
        # Strict JSON validation: no coercion of "15" to 15, and a JSON array may fill a tuple.
        return _ADAPTER.validate_json(json.dumps(obj), strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"][1:]) or "top level"
        raise BlockCertError(f"{what}: field {loc}: {first['msg']}") from None


def patch_json(patch: ScaleMlp | ScaleHeads | Swap | RankOne) -> dict:
    return patch.model_dump(mode="json")


def _scaled(t: torch.Tensor, alpha: float) -> torch.Tensor:
    return t * alpha  # a new tensor: the certified one is never written


def _linear_forms(ts: dict, name: str) -> str:
    if f"{name}.weight" in ts:
        return "dense"
    if f"{name}.u" in ts and f"{name}.v" in ts:
        return "low_rank"
    if f"{name}.q8" in ts and f"{name}.scale" in ts:
        return "int8"
    raise BlockCertError(f"the IR stores no linear map {name!r}")


def scale_output(ts: dict, name: str, alpha: float) -> dict:
    """Tensors of linear map `name` with its output multiplied by α, in whatever form it is stored."""
    form = _linear_forms(ts, name)
    out = dict(ts)
    part = {"dense": ("weight",), "low_rank": ("u",), "int8": ("scale",)}[form]
    for suffix in (*part, "bias"):
        key = f"{name}.{suffix}"
        if key in ts:
            out[key] = _scaled(ts[key], alpha)
    return out


def _stored_heads(ir: BlockIR, heads: tuple[int, ...], block: int) -> list[int]:
    att = ir.spec.attention
    native = att.heads.native_heads if att.heads is not None else att.num_heads
    kept = list(att.heads.kept) if att.heads is not None else list(range(att.num_heads))
    out = []
    for h in heads:
        if not 0 <= h < native:
            raise BlockCertError(f"patch: block {block} has {native} attention heads; head {h} does not exist")
        if h not in kept:
            raise BlockCertError(f"patch: head {h} of block {block} is pruned in this surrogate; nothing to scale")
        out.append(kept.index(h))
    return out


def scale_heads(ir: BlockIR, heads: tuple[int, ...], alpha: float, block: int) -> BlockIR:
    """Multiply the W_O columns that read each listed head's output by α (its contribution to the residual)."""
    stored = _stored_heads(ir, heads, block)
    if alpha == 1.0:
        return ir
    hd = ir.spec.attention.head_dim
    ts = ir.tensors
    form = _linear_forms(ts, "attn.o")
    if form == "int8":
        raise BlockCertError(f"patch: block {block} stores W_O as per-output-channel int8, whose columns cannot "
                             "be scaled exactly; edit an exact or low-rank surrogate instead")
    key = "attn.o.weight" if form == "dense" else "attn.o.v"
    w = ts[key].clone()
    for j in stored:
        w[:, j * hd : (j + 1) * hd] = w[:, j * hd : (j + 1) * hd] * alpha
    return BlockIR(ir.spec, {**ts, key: w})


def scale_mlp(ir: BlockIR, alpha: float) -> BlockIR:
    """α·MLP(x) by scaling W_down (and its bias): exactly the certified IR when α = 1, a zero branch when α = 0."""
    if alpha == 1.0:
        return ir
    return BlockIR(ir.spec, scale_output(ir.tensors, "mlp.down", alpha))


_PARTS = {"mlp": ("mlp.",), "attention": ("attn.", "rope.")}


def swap(ir: BlockIR, source: BlockIR, part: str, block: int, source_index: int) -> BlockIR:
    """Block `block` with its `part` taken from `source`: that part's tensors and its declaration."""
    a, b = ir.spec, source.spec
    if a.hidden_size != b.hidden_size or a.family != b.family:
        raise BlockCertError(f"patch: block {source_index} ({b.family}, hidden {b.hidden_size}) is not compatible "
                             f"with block {block} ({a.family}, hidden {a.hidden_size})")
    prefixes = _PARTS[part]
    mine = {k: v for k, v in ir.tensors.items() if not k.startswith(prefixes)}
    theirs = {k: v for k, v in source.tensors.items() if k.startswith(prefixes)}
    dtype = ir.tensors["attn_norm.weight"].dtype
    if any(v.is_floating_point() and v.dtype != dtype for v in theirs.values()):
        raise BlockCertError(f"patch: block {source_index}'s {part} tensors are not in block {block}'s dtype {dtype}")
    # The part's declaration is its spec and the stored form of each of its linear maps (dense, low rank, int8).
    linears = {**{k: f for k, f in a.linears.items() if not k.startswith(prefixes)},
               **{k: f for k, f in b.linears.items() if k.startswith(prefixes)}}
    spec = a.model_copy(update={part: getattr(b, part), "linears": linears})
    # The certified key order is kept (then the source's new names), so a swap of a block with itself
    # serialises to the certified bytes.
    out = {k: theirs.get(k, v) for k, v in ir.tensors.items() if k in mine or k in theirs}
    out.update({k: v for k, v in theirs.items() if k not in out})
    return BlockIR(spec, out)


def rank_one(ir: BlockIR, tensors: dict[str, torch.Tensor], matrix: str, block: int) -> BlockIR:
    """W + u vᵀ on a dense matrix, u and v cast to the IR's dtype; shapes and finiteness checked first."""
    ts = ir.tensors
    key = f"{matrix}.weight"
    if key not in ts:
        raise BlockCertError(f"patch: block {block} does not store {matrix} as a dense matrix; a rank-one update "
                             "needs the exact (dense) surrogate")
    extra = sorted(set(tensors) - {"u", "v"})
    if "u" not in tensors or "v" not in tensors or extra:
        found = ", ".join(sorted(tensors)) or "none"
        raise BlockCertError(f"patch tensors must be exactly 'u' and 'v' (found {found})")
    w = ts[key]
    u, v = tensors["u"], tensors["v"]
    if u.dim() != 1 or v.dim() != 1 or u.shape[0] != w.shape[0] or v.shape[0] != w.shape[1]:
        raise BlockCertError(f"patch tensors: {matrix} of block {block} is {list(w.shape)} [out, in]; u must be "
                             f"[{w.shape[0]}] and v [{w.shape[1]}], got u {list(u.shape)} and v {list(v.shape)}")
    if not (u.is_floating_point() and v.is_floating_point()):
        raise BlockCertError("patch tensors u and v must be floating point")
    u, v = u.to(w.dtype), v.to(w.dtype)
    if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(v).all())):
        raise BlockCertError("patch tensors u and v must be finite")
    return BlockIR(ir.spec, {**ts, key: w + torch.outer(u, v)})


def check_block(patch, num_layers: int, have: list[int]) -> None:
    """The patch's blocks exist in the model and the run holds a certified IR for them."""
    blocks = [patch.block] + ([patch.source] if isinstance(patch, Swap) else [])
    for i in blocks:
        if not 0 <= i < num_layers:
            raise BlockCertError(f"patch names block {i}, but the model has blocks 0-{num_layers - 1}")
        if i not in have:
            raise BlockCertError(f"patch names block {i}, but the run holds no certified surrogate for it; "
                                 f"extract it first: blockcert extract --blocks {i}")


def apply_patch(patch, ir: BlockIR, source: BlockIR | None = None,
                tensors: dict[str, torch.Tensor] | None = None) -> BlockIR:
    """The edited IR of `patch.block` (`ir` is its certified IR; `source` the swap's other block)."""
    if ir.spec.block_index != patch.block:
        raise BlockCertError(f"patch is for block {patch.block}, the IR is block {ir.spec.block_index}")
    if isinstance(patch, ScaleMlp):
        return scale_mlp(ir, patch.alpha)
    if isinstance(patch, ScaleHeads):
        return scale_heads(ir, patch.heads, patch.alpha, patch.block)
    if isinstance(patch, Swap):
        if source is None:
            raise BlockCertError("a swap needs the source block's IR")
        return swap(ir, source, patch.part, patch.block, patch.source)
    if tensors is None:
        raise BlockCertError("a rank-one patch needs its tensors")
    return rank_one(ir, tensors, patch.matrix, patch.block)


def same_ir(a: BlockIR, b: BlockIR) -> bool:
    """The same declaration and the same tensors, bit for bit (independent of how either was serialised)."""
    return (a.spec == b.spec and set(a.tensors) == set(b.tensors)
            and all(a.tensors[k].dtype == b.tensors[k].dtype and torch.equal(a.tensors[k], b.tensors[k])
                    for k in a.tensors))
