"""Versioned certificate schemas, canonical serialisation, and self-digests.

A certificate's `digest` is the SHA-256 of its canonical JSON without the `digest` field. Nothing
volatile (time, host, paths outside the run) is recorded, so the same inputs on the same machine give
byte-identical certificates.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_serializer, model_validator

from blockcert.core.ir import BlockIR, Derivation
from blockcert.core.metrics import BlockMetrics, Policy, Thresholds
from blockcert.core.schema import Frozen, Sealed
from blockcert.surrogates import densify, ir_size, weights_size
from blockcert.version import INTERPRETER_VERSION, __version__

BLOCK_SCHEMA = "blockcert.block-certificate/1"


class ToolInfo(Frozen):
    name: Literal["blockcert"] = "blockcert"
    version: str = __version__
    interpreter: str = INTERPRETER_VERSION


class ModelInfo(Frozen):
    name: str
    source: str
    architecture: str
    family: str
    num_layers: int
    weights_sha256: str
    dtype: Literal["float32", "float64"]
    device: Literal["cpu", "cuda"]


class PromptInfo(Frozen):
    name: str
    description: str
    sha256: str  # of the prompt texts
    token_ids_sha256: str
    n_prompts: int
    n_tokens: int


class Tolerances(Frozen):
    """How far a re-computation on another machine may differ and still agree (float rounding only).

    `replay_atol` bounds |Δe(p,t)| for a replay of the same surrogate on the same traces;
    `loss_atol` bounds |Δℓ(p,t)| for a re-run of the native model. Tokens within these of a
    threshold may flip; nothing else may change.
    """

    replay_atol: float
    loss_atol: float


class SurrogateSize(Frozen):
    """What the surrogate is and how big, beside what it replaces: every count from the tensors themselves.

    `surrogate_*` count the learned tensors of ir.safetensors (every tensor but the rotary tables, which
    are positions the native model computes too); `native_*` count the exact-copy IR of the same block,
    i.e. the native block's own parameters; `stored_bytes` is every tensor of ir.safetensors, tables
    included. Ratios are surrogate / native (< 1: smaller).
    """

    kind: str  # ir.json's `surrogate`
    derivation: Derivation | None  # ir.json's `derivation`: how it was derived, ranked on what
    surrogate_parameters: int
    surrogate_bytes: int
    native_parameters: int
    native_bytes: int
    parameter_ratio: float
    byte_ratio: float
    stored_bytes: int


TraceDtype = Literal["bfloat16", "float16", "float32", "float64"]


class TraceRounding(Frozen):
    """How far the stored traces are from the model's own: max over real tokens of ‖round(x) − x‖₂.

    `x_in` and `x_out` are measured on the block's input and output streams, in float64 (exact: the
    difference of a value and its rounding is representable). ε and every metric of the certificate are
    computed on the stored (rounded) traces, which the verifier replays; these numbers say how far those
    are from the native activations.
    """

    x_in: float = Field(ge=0.0)
    x_out: float = Field(ge=0.0)


class BlockCertificate(Sealed):
    schema_version: Literal["blockcert.block-certificate/1"] = BLOCK_SCHEMA
    tool: ToolInfo = ToolInfo()
    model: ModelInfo
    block_index: int
    prompts: PromptInfo
    thresholds: Thresholds
    policy: Policy
    tolerances: Tolerances
    metrics: BlockMetrics
    metrics_file: str
    artifacts: dict[str, str]  # path relative to the run directory -> SHA-256
    certified: bool
    reasons: tuple[str, ...]
    # Absent from certificates written before surrogate sizes were recorded; omitted from the JSON (and
    # so from the digest) when None, so those certificates keep their bytes and digests.
    size: SurrogateSize | None = None
    # The dtype traces.safetensors stores x_in and x_out in (`extract --trace-dtype`), and the rounding that
    # storing them so introduced. Absent (None, omitted from the JSON and the digest, as `size`) when the
    # traces are stored in the model's dtype, as every certificate written before the option stores them.
    trace_dtype: TraceDtype | None = None
    trace_rounding: TraceRounding | None = None
    digest: str = ""

    @model_validator(mode="after")
    def _rounding_with_dtype(self):
        if (self.trace_dtype is None) != (self.trace_rounding is None):
            raise ValueError("trace_dtype and trace_rounding are recorded together or not at all")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_size(self, handler):
        data = handler(self)
        for name in ("size", "trace_dtype", "trace_rounding"):
            if name in data and data[name] is None:
                del data[name]
        return data

    @property
    def stored_trace_dtype(self) -> str:
        """The dtype of the stored x_in and x_out: the declared trace dtype, else the model's."""
        return self.trace_dtype or self.model.dtype


def surrogate_size(ir: BlockIR, native: BlockIR | None = None) -> SurrogateSize:
    """The size section of a block certificate, counted from the IR's tensors.

    `native` is the block's exact-copy IR; without it, the native block's size is that of `densify(ir)`,
    which restores every native shape (factors multiplied out, int8 dequantised to the model dtype, pruned
    heads and neurons as zeros), i.e. exactly the tensors of the block the surrogate was derived from.
    """
    own = weights_size(ir)
    base = weights_size(native if native is not None else densify(ir))
    return SurrogateSize(
        kind=ir.spec.surrogate, derivation=ir.spec.derivation,
        surrogate_parameters=own.parameters, surrogate_bytes=own.bytes,
        native_parameters=base.parameters, native_bytes=base.bytes,
        parameter_ratio=own.parameters / base.parameters if base.parameters else 1.0,
        byte_ratio=own.bytes / base.bytes if base.bytes else 1.0,
        stored_bytes=ir_size(ir).bytes,
    )
