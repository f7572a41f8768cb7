"""The JSON Schemas committed under docs/schemas are the ones the code validates against."""

from __future__ import annotations

from pathlib import Path

from blockcert.records.registry import export_schemas

DOCS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


def test_committed_schemas_are_current(tmp_path):
    written = export_schemas(tmp_path)
    assert written
    for p in written:
        committed = DOCS / p.name
        assert committed.is_file(), f"{committed} missing: run `blockcert schema`"
        assert committed.read_text() == p.read_text(), f"{committed} is stale: run `blockcert schema`"
