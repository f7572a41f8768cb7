"""RUN_DIR/summary.json: the machine-readable index of a run's blocks and verdicts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from blockcert.core.metrics import Policy, Thresholds
from blockcert.records.certificate import ModelInfo, PromptInfo

SUMMARY_SCHEMA = "blockcert.summary/1"


class BlockEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    index: int
    certified: bool
    epsilon: float | None
    mae: float | None
    max_relative_error: float | None
    cov_act: float
    cov_path: float
    cov_loss: float
    n_tokens: int
    certificate: str  # relative path
    digest: str


class RunSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal["blockcert.summary/1"] = SUMMARY_SCHEMA
    model: ModelInfo
    prompts: PromptInfo
    thresholds: Thresholds
    policy: Policy
    blocks: tuple[BlockEntry, ...]
    all_certified: bool
