"""The manifest's own checks: every file it lists is there and hashes to its digest, and it lists every file.

A file the manifest does not list is evidence nobody vouches for (a report, a plot, a module edited by
hand), and a listed file that is missing or changed is a broken run; each is one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

from blockcert.core.digest import sha256_bytes
from blockcert.errors import BlockCertError
from blockcert.records.summary import RunSummary
from blockcert.store.files import read_inside, resolve_inside
from blockcert.store.manifest import run_files
from blockcert.store.run_reader import MAX_ARTIFACT_BYTES

MAX_FILES = 100_000  # files one run may list; a 30-block run has ~190


def manifest_problems(run_dir: Path, summary: RunSummary) -> list[str]:
    out = []
    if len(summary.files) > MAX_FILES:
        return [f"summary.json field files lists {len(summary.files)} files, over the limit of {MAX_FILES}"]
    for rel, digest in sorted(summary.files.items()):
        try:
            if not resolve_inside(run_dir, rel).exists():
                out.append(f"{rel[:120]} is listed in summary.json field files but missing")
                continue
            data = read_inside(run_dir, rel, rel, MAX_ARTIFACT_BYTES)
        except BlockCertError as e:
            out.append(f"summary.json field files: {e}")
            continue
        if sha256_bytes(data) != digest:
            out.append(f"{rel}: SHA-256 differs from summary.json field files[{rel!r}] (changed since it was recorded)")
    present = run_files(run_dir)
    for rel in present:
        if rel not in summary.files:
            out.append(f"{rel} is not listed in summary.json field files (left from another run, or added by hand)")
    return out
