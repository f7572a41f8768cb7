"""Side effects on disk: atomic writes, hashing, and paths that stay inside a run directory."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from blockcert.errors import BlockCertError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(obj: Any) -> bytes:
    """Canonical key order, indented for people; the bytes are a pure function of `obj`."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BlockCertError(f"{what} not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BlockCertError(f"{what} is not valid JSON: {path} ({e})") from None


def resolve_inside(run_dir: Path, rel: str) -> Path:
    """Resolve an artifact path recorded in a certificate, refusing anything that leaves `run_dir`.

    Absolute paths, `..` components and symlinks that point outside are all rejected: a verifier
    must never be tricked into hashing (or vouching for) a file the run does not contain.
    """
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or ".." in p.parts or not rel:
        raise BlockCertError(f"artifact path {rel!r} escapes the run directory")
    root = run_dir.resolve()
    full = (root / p).resolve()
    if full != root and root not in full.parents:
        raise BlockCertError(f"artifact path {rel!r} resolves outside the run directory (symlink?)")
    return full


def ensure_writable_dir(path: Path) -> None:
    """Fail early, with one line, when the output directory cannot be created or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".blockcert-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise BlockCertError(
            f"output directory {path} is not writable ({e.strerror or e}); choose another --out"
        ) from None
