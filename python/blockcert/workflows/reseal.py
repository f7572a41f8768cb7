"""`blockcert reseal RUN_DIR`: upgrade a run's manifest to the sealed schema (or re-seal it after a command that
predates the manifest wrote into the run).

Nothing is taken from the old summary but the list of blocks: every entry, and the model, prompts,
thresholds and policy the manifest states, come from the block certificates, each of which must match its
own digest and agree with the others. The files present are hashed as they are now (trust on first use):
sealing needs no secret, so `blockcert verify` still re-derives every number from them afterwards.
"""

from __future__ import annotations

from pathlib import Path

from blockcert.core.digest import sha256_bytes
from blockcert.errors import BlockCertError
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import SHARED, RunSummary, entry_of
from blockcert.store import layout
from blockcert.store.files import read_inside
from blockcert.store.manifest import run_files, write_manifest
from blockcert.store.records_io import parse_model
from blockcert.store.strict_json import StrictJsonError, parse_strict


def _listed_blocks(run_dir: Path) -> list[str]:
    try:
        raw = parse_strict(read_inside(run_dir, layout.SUMMARY, "run summary"))
        rels = [b["certificate"] for b in raw["blocks"]]
    except (StrictJsonError, KeyError, TypeError) as e:
        raise BlockCertError(f"{run_dir / layout.SUMMARY} cannot be read as a run summary ({e}); re-extract") from None
    if not all(isinstance(r, str) for r in rels):
        raise BlockCertError(f"{run_dir / layout.SUMMARY}: field blocks[].certificate must be paths; re-extract")
    return rels


def reseal_run(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    if not (run_dir / layout.SUMMARY).is_file():
        raise BlockCertError(f"{run_dir} holds no {layout.SUMMARY}: not a run; run `blockcert extract`")
    certs: list[BlockCertificate] = []
    for rel in _listed_blocks(run_dir):
        cert = parse_model(read_inside(run_dir, rel, "certificate"), BlockCertificate, f"certificate {rel}")
        if cert.body_digest() != cert.digest:
            raise BlockCertError(f"{rel} does not match its digest (edited?): reseal refuses it; re-extract the block")
        if rel != f"block_{cert.block_index:03d}/{layout.CERTIFICATE}":
            raise BlockCertError(f"{rel} holds the certificate of block {cert.block_index}; re-extract")
        certs.append(cert)
    if not certs:
        raise BlockCertError(f"{run_dir / layout.SUMMARY} lists no block: nothing to seal; re-extract")
    first = certs[0]
    for c in certs[1:]:
        for name in SHARED:
            if getattr(c, name) != getattr(first, name):
                raise BlockCertError(f"block {c.block_index}: its {name} differs from block {first.block_index}'s: "
                                     "the blocks come from different runs; re-extract")
    certs.sort(key=lambda c: c.block_index)
    entries = tuple(entry_of(c) for c in certs)
    files = {rel: sha256_bytes(read_inside(run_dir, rel, rel)) for rel in run_files(run_dir)}
    summary = RunSummary(
        tool=first.tool, model=first.model, prompts=first.prompts, thresholds=first.thresholds, policy=first.policy,
        blocks=entries, all_certified=all(e.certified for e in entries),
    ).with_files(files)
    write_manifest(run_dir, summary)
    return summary
