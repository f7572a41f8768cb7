"""The two recorded schemas of the Max-of-K study: the training record and the proof certificate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from blockcert.records import Frozen, Sealed

TRAIN_SCHEMA = "blockcert.maxk.train/1"
PROOF_SCHEMA = "blockcert.maxk.proof/1"
Method = Literal["brute", "cubic", "subcubic"]


class TrainConfigRecord(Frozen):
    d_vocab: int = Field(ge=2)
    k: int = Field(ge=2)
    d_model: int = Field(ge=1)
    d_head: int = Field(ge=1)
    steps: int = Field(ge=0)
    batch: int = Field(ge=1)
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    n_test: int = Field(ge=1)


class TrainRecord(Sealed):
    schema_id: Literal["blockcert.maxk.train/1"] = TRAIN_SCHEMA
    config: TrainConfigRecord
    seed: int
    final_loss: float
    test_correct: int = Field(ge=0)
    test_accuracy: float
    weights_file: Literal["weights.safetensors"] = "weights.safetensors"
    weights_sha256: str
    torch_version: str
    wall_seconds: float
    digest: str = ""


class Cost(Frozen):
    flops: int = Field(ge=0)
    wall_seconds: float = Field(ge=0)
    cases_evaluated: int = Field(ge=0)
    note: str


class ProofCertificate(Sealed):
    """An accuracy lower bound: bound = Σ proven / d_vocab^K, per (query token, max token) group.

    Groups are in canonical order (max token ascending, then query token ascending, query ≤ max);
    `group_totals` are the exact sizes of the groups, recomputable from d_vocab and K alone.
    """

    schema_id: Literal["blockcert.maxk.proof/1"] = PROOF_SCHEMA
    method: Method
    d_vocab: int = Field(ge=2)
    k: int = Field(ge=2)
    weights_sha256: str
    train_record_sha256: str
    tie_convention: str
    params: dict[str, int]
    group_totals: list[int]
    proven: list[int]
    ambiguous: list[int] | None = None
    bound_num: int = Field(ge=0)
    bound_den: int = Field(ge=1)
    bound: float
    accuracy_num: int | None = None
    accuracy_cert_digest: str | None = None
    normalised: float | None = None
    cost: Cost
    diagnostics: dict[str, float]
    lean_module: str
    digest: str = ""
