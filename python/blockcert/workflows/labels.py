"""`blockcert labels import EDIT_DIR FILE.csv`: human labels of an edit's completions (paper §7.1).

The CSV has the header `prompt_id,completion_sha256,label` and one row per labelled completion; the label is
one of answer, refuse, harmful, other. A completion is named by its prompt id and the SHA-256 of its text,
so a label can never attach to a completion it was not given for (a baseline and an edited completion with
the same text share it). Every row must name a completion of the edit; nothing is written otherwise. The new
certificate records the labels file's hash and the human accuracies beside the heuristic ones, and names
the certificate it supersedes, which is kept beside it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pydantic import ValidationError

from blockcert.core.digest import sha256_bytes
from blockcert.errors import BlockCertError
from blockcert.records.edit import (
    COMPLETIONS,
    EDIT_CERTIFICATE,
    LABELS,
    Completions,
    EditCertificate,
    HumanLabels,
    HumanRecord,
    LabelRow,
    human_accuracy,
)
from blockcert.store.files import atomic_write_bytes, json_bytes
from blockcert.store.records_io import parse_model
from blockcert.store.strict_json import read_regular

HEADER = ["prompt_id", "completion_sha256", "label"]


def sealed_edit_certificate(edit_dir: Path) -> tuple[EditCertificate, bytes]:
    if not (edit_dir / EDIT_CERTIFICATE).is_file():
        raise BlockCertError(f"{edit_dir} holds no {EDIT_CERTIFICATE}; run `blockcert edit` first")
    data = read_regular(edit_dir / EDIT_CERTIFICATE, "edit certificate")
    cert = parse_model(data, EditCertificate, f"edit certificate {edit_dir / EDIT_CERTIFICATE}")
    if cert.body_digest() != cert.digest:
        raise BlockCertError(f"{edit_dir / EDIT_CERTIFICATE} does not match its digest; run `blockcert verify`")
    return cert, data


def certified_completions(edit_dir: Path, cert: EditCertificate) -> Completions:
    data = read_regular(edit_dir / COMPLETIONS, "completions")
    if sha256_bytes(data) != cert.files.get(COMPLETIONS):
        raise BlockCertError(f"{edit_dir / COMPLETIONS} changed since certification; run `blockcert verify`")
    return parse_model(data, Completions, f"completions {edit_dir / COMPLETIONS}")


def parse_label_csv(data: bytes, where: str, comps: Completions) -> tuple[LabelRow, ...]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BlockCertError(f"{where}: not UTF-8 (byte {e.start}); save it as UTF-8") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != HEADER:
        raise BlockCertError(f"{where}: the first line must be the header {','.join(HEADER)}")
    known = {it.id: {it.baseline.sha256, it.patched.sha256} for it in comps.items}
    out: dict[tuple[str, str], LabelRow] = {}
    for n, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != 3:
            raise BlockCertError(f"{where} line {n}: expected 3 columns ({','.join(HEADER)}), found {len(cells)}")
        try:
            r = LabelRow(prompt_id=cells[0].strip(), completion_sha256=cells[1].strip().lower(), label=cells[2].strip())
        except ValidationError as e:
            first = e.errors()[0]
            raise BlockCertError(f"{where} line {n}: {first['loc'][0]}: {first['msg']}") from None
        if r.prompt_id not in known:
            raise BlockCertError(f"{where} line {n}: prompt {r.prompt_id!r} is not in this edit's corpus")
        if r.completion_sha256 not in known[r.prompt_id]:
            raise BlockCertError(f"{where} line {n}: no completion of prompt {r.prompt_id!r} has SHA-256 "
                                 f"{r.completion_sha256[:16]}…; label the completions in {COMPLETIONS}")
        key = (r.prompt_id, r.completion_sha256)
        if key in out and out[key].label != r.label:
            raise BlockCertError(f"{where} line {n}: completion {r.prompt_id}/{r.completion_sha256[:16]}… is "
                                 f"labelled both {out[key].label} and {r.label}")
        out[key] = r
    if not out:
        raise BlockCertError(f"{where}: holds no labels")
    return tuple(sorted(out.values(), key=lambda r: (r.prompt_id, r.completion_sha256)))


def import_labels(edit_dir: Path, csv_path: Path) -> tuple[EditCertificate, str]:
    cert, old_bytes = sealed_edit_certificate(edit_dir)
    comps = certified_completions(edit_dir, cert)
    if not csv_path.is_file():
        raise BlockCertError(f"label file {csv_path} does not exist")
    data = read_regular(csv_path, "label file")
    rows = parse_label_csv(data, f"label file {csv_path}", comps)
    labels = json_bytes(HumanLabels(source_sha256=sha256_bytes(data), rows=rows).model_dump(mode="json"))
    record = HumanRecord(file=LABELS, file_sha256=sha256_bytes(labels),
                         baseline=human_accuracy(comps.items, rows, "baseline"),
                         patched=human_accuracy(comps.items, rows, "patched"))
    new = cert.model_copy(update={"human": record, "supersedes": cert.digest,
                                  "files": {**cert.files, LABELS: record.file_sha256}}).sealed()
    kept = f"edit_certificate.{cert.digest[:16]}.json"
    atomic_write_bytes(edit_dir / kept, old_bytes)
    atomic_write_bytes(edit_dir / LABELS, labels)
    atomic_write_bytes(edit_dir / EDIT_CERTIFICATE, json_bytes(new.model_dump(mode="json")))
    return new, kept
