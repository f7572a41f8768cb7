"""Versioned certificate schemas, canonical serialisation, and self-digests.

A certificate's `digest` is the SHA-256 of its canonical JSON without the `digest` field. Nothing
volatile (time, host, paths outside the run) is recorded, so the same inputs on the same machine give
byte-identical certificates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError

from . import INTERPRETER_VERSION, __version__
from .errors import BlockCertError
from .files import atomic_write_json, read_json
from .metrics import BlockMetrics, Policy, Thresholds
from .records import Frozen, Sealed

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


M = TypeVar("M", bound=BaseModel)


def load_model_file(path: Path, cls: type[M], what: str) -> M:
    data = read_json(path, what)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise BlockCertError(f"{what} {path} does not match its schema: {loc}: {first['msg']}") from None


def write_model_file(path: Path, obj: BaseModel) -> None:
    atomic_write_json(path, obj.model_dump(mode="json"))


def export_schemas(out_dir: Path) -> list[Path]:
    """Write the JSON Schema of every file format BlockCert writes and verifies (docs/schemas/)."""
    from .bounds.artifact import BoundArtifact
    from .fullmodel import FullModelCertificate, FullModelEvaluation
    from .semantic import SemanticEvaluation
    from .summary import RunSummary

    formats = {
        "block-certificate": BlockCertificate,
        "summary": RunSummary,
        "full-model-certificate": FullModelCertificate,
        "full-model-metrics": FullModelEvaluation,
        "semantic-probe-eval": SemanticEvaluation,
        "bound": BoundArtifact,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cls in formats.items():
        p = out_dir / f"{name}.schema.json"
        p.write_text(json.dumps(cls.model_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(p)
    return written
