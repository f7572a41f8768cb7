"""A run directory's files: held in memory, written as they are made, and the ordered way they reach the disk.

Verdicts are removed first and written last: block certificates after every artifact they hash, the
manifest (summary.json) after every certificate. An interrupted save therefore never leaves a file that
looks like a valid certificate of artifacts that are not all there.

`RunWriter` is how extraction makes a run: each file is handed over as soon as it exists and either kept in
memory (no run directory: an in-memory `Run`) or written at once and dropped (a run directory: memory then
holds one block's files at a time, never the whole run). `DiskFiles` is a saved run's files as a mapping
that reads each one when asked, checked against the digest the manifest records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch

from blockcert.core.digest import sha256_bytes
from blockcert.errors import BlockCertError
from blockcert.store import layout
from blockcert.store.files import atomic_write_bytes, ensure_writable_dir, resolve_inside
from blockcert.store.strict_json import read_regular
from blockcert.store.tensors import tensor_bytes, write_tensors_file

MAX_FILE_BYTES = 8 << 30  # one file of a run (store/run_reader.py's MAX_ARTIFACT_BYTES)


def _rank(rel: str) -> int:
    name = rel.rsplit("/", 1)[-1]
    if rel == layout.SUMMARY:
        return 2
    return 1 if name == layout.CERTIFICATE else 0


def save_files(files: Mapping[str, bytes], run_dir: Path) -> None:
    """Write `files` (path relative to the run directory → bytes) under `run_dir`, verdicts last.

    `files` may be a `DiskFiles`: each file is then read, checked and written one at a time."""
    ensure_writable_dir(run_dir)
    for rel in sorted(files, key=_rank, reverse=True):  # verdicts first out
        if _rank(rel):
            resolve_inside(run_dir, rel).unlink(missing_ok=True)
    for rel in sorted(files, key=lambda r: (_rank(r), r)):
        target = resolve_inside(run_dir, rel)  # never follow a symlink out of the run directory
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, files[rel])


class DiskFiles(Mapping[str, bytes]):
    """The files of the run at `run_dir` that `digests` lists (and summary.json), read on access.

    Each file is read when asked for and refused unless it hashes to its recorded digest, so a copy made
    through this mapping (`save_files`) is the certified run or an error, and holds one file at a time."""

    def __init__(self, run_dir: Path, digests: Mapping[str, str]):
        self.run_dir, self.digests = Path(run_dir), dict(digests)

    def __getitem__(self, rel: str) -> bytes:
        if rel != layout.SUMMARY and rel not in self.digests:
            raise KeyError(rel)
        data = read_regular(resolve_inside(self.run_dir, rel), f"run file {rel}", MAX_FILE_BYTES)
        if rel != layout.SUMMARY and sha256_bytes(data) != self.digests[rel]:
            raise BlockCertError(f"{self.run_dir / rel} changed since it was written (SHA-256 mismatch); "
                                 "run `blockcert verify` on the run directory")
        return data

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self.digests, layout.SUMMARY}))

    def __len__(self) -> int:
        return len({*self.digests, layout.SUMMARY})


class RunWriter:
    """A run's files as extraction makes them: in memory (`run_dir` None) or written at once under `run_dir`.

    On disk, the verdicts the new run will replace (summary.json, the certificates of `blocks`) are removed
    before anything is written, and the caller hands certificates and the manifest over last; `digests`
    records the SHA-256 of every file put, for the certificates and the manifest."""

    def __init__(self, run_dir: Path | None, blocks: Iterable[int] = ()):
        self.run_dir = run_dir
        self.digests: dict[str, str] = {}
        self.files: dict[str, bytes] | None = {} if run_dir is None else None
        if run_dir is not None:
            ensure_writable_dir(run_dir)
            stale = [layout.SUMMARY, *(f"block_{i:03d}/{layout.CERTIFICATE}" for i in blocks)]
            for rel in stale:  # verdicts first out
                resolve_inside(run_dir, rel).unlink(missing_ok=True)

    @property
    def on_disk(self) -> bool:
        return self.run_dir is not None

    def put(self, rel: str, data: bytes) -> str:
        """Keep or write one file; its SHA-256."""
        digest = sha256_bytes(data)
        if self.files is not None:
            self.files[rel] = data
        else:
            target = resolve_inside(self.run_dir, rel)  # never follow a symlink out of the run directory
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
        self.digests[rel] = digest
        return digest

    def put_tensors(self, rel: str, tensors: dict[str, torch.Tensor]) -> str:
        """Keep or write one safetensors file (the bytes of `tensor_bytes`); its SHA-256. On disk the file is
        written from the tensors' own memory, with no copy of its bytes."""
        if self.files is not None:
            return self.put(rel, tensor_bytes(tensors))
        digest = write_tensors_file(resolve_inside(self.run_dir, rel), tensors)
        self.digests[rel] = digest
        return digest

    def get(self, rel: str) -> bytes:
        """A file put before, read back (from disk: checked against the digest recorded when it was put)."""
        if self.files is not None:
            return self.files[rel]
        return DiskFiles(self.run_dir, self.digests)[rel]

    def all_files(self) -> Mapping[str, bytes]:
        """Every file put: the bytes themselves, or the run directory's files read on access."""
        return self.files if self.files is not None else DiskFiles(self.run_dir, self.digests)

    def discard(self) -> None:
        """After a failure: remove every file written (a half-made run leaves no partial block behind)."""
        if self.run_dir is None:
            return
        dirs = set()
        for rel in self.digests:
            path = resolve_inside(self.run_dir, rel)
            path.unlink(missing_ok=True)
            dirs.add(path.parent)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            if d != self.run_dir.resolve() and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        self.digests.clear()
