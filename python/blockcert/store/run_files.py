"""A run directory's files held in memory, and the one ordered, atomic way they reach the disk.

Verdicts are removed first and written last: block certificates after every artifact they hash, the
manifest (summary.json) after every certificate. An interrupted save therefore never leaves a file that
looks like a valid certificate of artifacts that are not all there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from blockcert.store import layout
from blockcert.store.files import atomic_write_bytes, ensure_writable_dir, resolve_inside


def _rank(rel: str) -> int:
    name = rel.rsplit("/", 1)[-1]
    if rel == layout.SUMMARY:
        return 2
    return 1 if name == layout.CERTIFICATE else 0


def save_files(files: Mapping[str, bytes], run_dir: Path) -> None:
    """Write `files` (path relative to the run directory → bytes) under `run_dir`, verdicts last."""
    ensure_writable_dir(run_dir)
    for rel in sorted(files, key=_rank, reverse=True):  # verdicts first out
        if _rank(rel):
            resolve_inside(run_dir, rel).unlink(missing_ok=True)
    for rel in sorted(files, key=lambda r: (_rank(r), r)):
        target = resolve_inside(run_dir, rel)  # never follow a symlink out of the run directory
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, files[rel])
