"""TODO-DOC"""

from __future__ import annotations

from typing import Literal

from blockcert.core.digest import canonical_json, sha256_bytes
from blockcert.core.schema import Frozen
from blockcert.records.certificate import ModelInfo
from blockcert.records.fullmodel import SemanticMetrics

LABELLING = "blockcert.first-token/1"


SEMANTIC_SCHEMA = "blockcert.semantic-probe-eval/1"


class ProbeItem(Frozen):
    category: str
    prompt: str
    label: str


class Probe(Frozen):
    name: str
    description: str
    labelling: Literal["blockcert.first-token/1"]
    items: tuple[ProbeItem, ...]

    @property
    def sha256(self) -> str:
        return probe_sha256(self.items)


def probe_sha256(items: tuple[ProbeItem, ...] | list[ProbeItem]) -> str:
    """Hash of the (category, prompt, label) triples alone: a renamed copy hashes the same."""
    return sha256_bytes(canonical_json([i.model_dump(mode="json") for i in items]).encode("utf-8"))


def is_correct(answer: str, label_token: str) -> bool:
    return bool(answer) and answer == label_token


class SemanticItem(Frozen):
    index: int
    category: str
    prompt: str
    label: str
    label_token: str  # the label's first token under the convention
    baseline_token: int
    baseline_answer: str
    stitched_token: int
    stitched_answer: str


def semantic_metrics(items: tuple[SemanticItem, ...]) -> SemanticMetrics:
    """Fidelity and correctness counts, from the recorded answers alone (the verifier reruns this)."""
    n = len(items)
    agreed = sum(i.stitched_token == i.baseline_token for i in items)
    base = sum(is_correct(i.baseline_answer, i.label_token) for i in items)
    stit = sum(is_correct(i.stitched_answer, i.label_token) for i in items)
    return SemanticMetrics(
        n_prompts=n,
        fidelity_agreed=agreed,
        fidelity=agreed / n if n else 0.0,
        baseline_correct=base,
        baseline_accuracy=base / n if n else 0.0,
        stitched_correct=stit,
        stitched_accuracy=stit / n if n else 0.0,
    )


class SemanticEvaluation(Frozen):
    """full_model_semantic.json."""

    schema_version: Literal["blockcert.semantic-probe-eval/1"] = SEMANTIC_SCHEMA
    model: ModelInfo
    probe_name: str
    probe_sha256: str
    labelling: Literal["blockcert.first-token/1"] = LABELLING
    stitched_blocks: tuple[int, ...]
    batch_size: int
    items: tuple[SemanticItem, ...]
    metrics: SemanticMetrics
