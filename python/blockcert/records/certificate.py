"""Versioned certificate schemas, canonical serialisation, and self-digests.

A certificate's `digest` is the SHA-256 of its canonical JSON without the `digest` field. Nothing
volatile (time, host, paths outside the run) is recorded, so the same inputs on the same machine give
byte-identical certificates.
"""

from __future__ import annotations

from typing import Literal

from blockcert.core.metrics import BlockMetrics, Policy, Thresholds
from blockcert.core.schema import Frozen, Sealed
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
    digest: str = ""
