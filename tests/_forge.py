"""What a forger can do without any secret: edit a certificate, re-digest it, and re-seal the manifest over
every file as it now is. The verifier must still catch every change it can re-derive."""

from __future__ import annotations

import json
from pathlib import Path

from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary, entry_of
from blockcert.store.files import sha256_file
from blockcert.store.manifest import run_files


def reseal_manifest(run: Path, mutate=lambda d: None) -> None:
    """Rebuild every entry from its certificate, re-hash every file, apply `mutate` to the JSON, seal."""
    s = json.loads((run / "summary.json").read_text())
    entries = []
    for b in s["blocks"]:
        p = run / b["certificate"]
        if p.is_file():
            cert = BlockCertificate.model_validate_json(p.read_bytes())
            entries.append({**entry_of(cert).model_dump(mode="json"), "index": b["index"]})
        else:
            entries.append(b)
    s["blocks"] = entries
    s["files"] = {rel: sha256_file(run / rel) for rel in run_files(run) if (run / rel).is_file()}
    mutate(s)
    s.pop("digest", None)
    summary = RunSummary.model_validate(s).sealed()
    (run / "summary.json").write_text(summary.model_dump_json())


def _rehash(run: Path, rel: str, old: str) -> str:
    try:
        return sha256_file(run / rel) if (run / rel).is_file() else old
    except (OSError, ValueError):  # a NUL byte or an over-long name: the forger keeps the entry as it is
        return old


def reseal(run: Path, i: int, mutate=lambda d: None) -> None:
    """Edit block i's certificate, re-hash its artifacts, re-digest it, then re-seal the manifest."""
    path = run / f"block_{i:03d}" / "certificate.json"
    d = json.loads(path.read_text())
    mutate(d)
    d["artifacts"] = {k: _rehash(run, k, v) for k, v in d["artifacts"].items()}
    cert = BlockCertificate.model_validate(d).sealed()
    path.write_text(cert.model_dump_json())
    reseal_manifest(run)
