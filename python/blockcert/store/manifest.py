"""The run manifest (summary.json) on disk: read it sealed, and record a command's outputs in it.

Every command that writes into a run directory after `extract` (stitch, semantic, bound, lean) ends by
calling `record_outputs` with the files it wrote: their SHA-256 enter the manifest's `files`, and the
manifest is re-sealed. A file the manifest does not list is reported by `blockcert verify`.
"""

from __future__ import annotations

from pathlib import Path

from blockcert.core.digest import sha256_bytes
from blockcert.errors import BlockCertError
from blockcert.records.summary import OLD_SUMMARY_SCHEMAS, SUMMARY_SCHEMA, RunSummary
from blockcert.store import layout
from blockcert.store.files import atomic_write_bytes, json_bytes, read_inside, resolve_inside
from blockcert.store.records_io import parse_model
from blockcert.store.strict_json import StrictJsonError, parse_strict

# Written by `lake build` inside a run package: build outputs, never evidence.
IGNORED_DIRS = (".lake", "build")
IGNORED_FILES = ("lake-manifest.json",)


def reseal_hint(run_dir: Path) -> str:
    return f"re-extract, or run `blockcert reseal {run_dir}` to upgrade it"


def parse_manifest(data: bytes, run_dir: Path) -> RunSummary:
    """summary.json's bytes as a sealed manifest; one line for an old schema, a broken seal or bad JSON."""
    what = f"run summary {run_dir / layout.SUMMARY}"
    try:
        raw = parse_strict(data)
    except StrictJsonError as e:
        raise BlockCertError(f"{what} is not strict JSON: {e}") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version in OLD_SUMMARY_SCHEMAS:
        raise BlockCertError(f"{what} is an old, unsealed manifest ({version}, now {SUMMARY_SCHEMA}); "
                             f"{reseal_hint(run_dir)}")
    summary = parse_model(data, RunSummary, what)
    if summary.body_digest() != summary.digest:
        raise BlockCertError(f"{what} does not match its digest (field digest): edited since it was sealed; "
                             f"{reseal_hint(run_dir)} after checking why")
    return summary


def load_manifest(run_dir: Path) -> RunSummary:
    if not run_dir.is_dir():
        raise BlockCertError(f"run directory {run_dir} does not exist")
    if not (run_dir / layout.SUMMARY).exists():
        raise BlockCertError(f"{run_dir} holds no {layout.SUMMARY}: not a complete run; run `blockcert extract` first")
    return parse_manifest(read_inside(run_dir, layout.SUMMARY, "run summary"), run_dir)


def write_manifest(run_dir: Path, summary: RunSummary) -> None:
    atomic_write_bytes(resolve_inside(run_dir, layout.SUMMARY), json_bytes(summary.model_dump(mode="json")))


def record_outputs(run_dir: Path, rels: list[str]) -> RunSummary:
    """Hash the files `rels` (relative to the run) as they are now, list them in the manifest and re-seal it;
    one of them that the command removed leaves the manifest too."""
    run_dir = Path(run_dir)
    summary = load_manifest(run_dir)
    files = dict(summary.files)
    for rel in rels:
        if resolve_inside(run_dir, rel).exists():
            files[rel] = sha256_bytes(read_inside(run_dir, rel, rel))
        else:
            files.pop(rel, None)
    out = summary.with_files(files)
    write_manifest(run_dir, out)
    return out


def record_if_run(path: Path) -> None:
    """Record a report written beside a run's manifest (sensitivity studies write into the run directory)."""
    path = Path(path)
    if (path.parent / layout.SUMMARY).is_file():
        record_outputs(path.parent, [path.name])


def run_files(run_dir: Path) -> list[str]:
    """Every file under the run directory (relative POSIX paths, sorted), build outputs of Lean excepted;
    symlinks and other non-regular entries are listed too, so that the verifier reports them."""
    root = Path(run_dir)
    out = []
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for p in entries:
            rel = p.relative_to(root).as_posix()
            if p.is_dir() and not p.is_symlink():
                if p.name not in IGNORED_DIRS:
                    stack.append(p)
            elif p.name not in IGNORED_FILES and rel != layout.SUMMARY and not p.name.startswith("."):
                out.append(rel)
    return sorted(out)
