"""Side effects on disk: atomic writes, hashing, and paths that stay inside a run directory."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from blockcert.errors import BlockCertError
from blockcert.store.strict_json import StrictJsonError, parse_strict, read_regular

_CHUNK = 1 << 20
FILE_MODE = 0o644
MAX_PATH_CHARS = 1024  # an artifact path a run records; the deepest real one is ~30 characters
MAX_NAME_CHARS = 255  # one component (most file systems' own limit)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_with(path: Path, write: Callable[[BinaryIO, Path], None]) -> None:
    """`write(f, tmp)` fills a temporary file beside `path` (through the open file `f`, or by its path `tmp`
    for a writer that streams, e.g. safetensors' save_file); it is then fsynced and renamed onto `path`:
    readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f, Path(tmp))
        # Opened again by its name: a writer by path may have replaced the file mkstemp made.
        with open(tmp, "rb") as f:
            # mkstemp creates 0600; a run is a build output colleagues must be able to verify.
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)  # rename replaces a symlink at `path` itself; it never writes through it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see all or nothing."""
    atomic_write_with(path, lambda f, _tmp: f.write(data))


def json_bytes(obj: Any) -> bytes:
    """Canonical key order, indented for people; the bytes are a pure function of `obj`."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def read_json(path: Path, what: str) -> Any:
    """A JSON file through the hardened reader (regular file, size cap, duplicate keys, NaN, depth)."""
    from_bytes = read_regular(path, what)
    try:
        return parse_strict(from_bytes)
    except StrictJsonError as e:
        raise BlockCertError(f"{what} {path} is not strict JSON: {e}") from None


def read_inside(run_dir: Path, rel: str, what: str, limit: int | None = None) -> bytes:
    """The bytes of a run's file `rel`: resolved inside the run first, a regular file, at most `limit` bytes."""
    path = resolve_inside(run_dir, rel)
    return read_regular(path, what) if limit is None else read_regular(path, what, limit)


def json_inside(run_dir: Path, rel: str, what: str) -> Any:
    """A run's JSON file `rel`, resolved inside the run and parsed strictly."""
    return read_json(resolve_inside(run_dir, rel), what)


def resolve_inside(run_dir: Path, rel: str) -> Path:
    """Resolve an artifact path recorded in a certificate, refusing anything that leaves `run_dir`.

    Absolute paths, `..` components and symlinks that point outside are all rejected: a verifier
    must never be tricked into hashing (or vouching for) a file the run does not contain.
    """
    if not isinstance(rel, str) or not rel or "\0" in rel or len(rel) > MAX_PATH_CHARS:
        shown = rel[:60] + "…" if isinstance(rel, str) and len(rel) > 60 else rel
        raise BlockCertError(f"artifact path {shown!r} is empty, too long or holds a NUL byte")
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or ".." in p.parts or "\\" in rel:
        raise BlockCertError(f"artifact path {rel!r} escapes the run directory")
    if any(len(part) > MAX_NAME_CHARS for part in p.parts):
        raise BlockCertError(f"artifact path {rel[:60]!r}… has a name longer than {MAX_NAME_CHARS} characters")
    root = run_dir.resolve()
    # No component below the run directory may be a symlink, even one pointing inside: a symlink is how
    # a read (or a write) is made to land elsewhere, and a run never needs one.
    here = root
    for part in p.parts:
        here = here / part
        if here.is_symlink():
            raise BlockCertError(f"artifact path {rel!r}: {layout_rel(root, here)} is a symlink; a run holds none")
    full = (root / p).resolve()
    if full != root and root not in full.parents:
        raise BlockCertError(f"artifact path {rel!r} resolves outside the run directory (symlink?)")
    return full


def layout_rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


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
