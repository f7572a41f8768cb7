"""The registry of file formats: every schema BlockCert writes and verifies, by its public name."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from blockcert.records.bound import BoundArtifact
from blockcert.records.certificate import BlockCertificate
from blockcert.records.fullmodel import FullModelCertificate, FullModelEvaluation
from blockcert.records.semantic import SemanticEvaluation
from blockcert.records.summary import RunSummary

FORMATS: dict[str, type[BaseModel]] = {
    "block-certificate": BlockCertificate,
    "summary": RunSummary,
    "full-model-certificate": FullModelCertificate,
    "full-model-metrics": FullModelEvaluation,
    "semantic-probe-eval": SemanticEvaluation,
    "bound": BoundArtifact,
}


def export_schemas(out_dir: Path) -> list[Path]:
    """Write the JSON Schema of every file format BlockCert writes and verifies (docs/schemas/)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cls in FORMATS.items():
        p = out_dir / f"{name}.schema.json"
        p.write_text(json.dumps(cls.model_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(p)
    return written
