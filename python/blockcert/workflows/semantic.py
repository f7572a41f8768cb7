"""`blockcert semantic`: semantic-preservation probe of the stitched model (paper §6.7).

Two separate questions, answered on a bundled set of 30 human-labelled prompts:
  fidelity             does the stitched model's greedy next token equal the baseline's?
  absolute correctness does each model's greedy next token match the human label?
A stitched model can be perfectly faithful to a baseline that is itself often wrong (a 135M model
rarely gets arithmetic right); the certificate records both so nobody confuses the two.

Labelling convention `blockcert.first-token/1`: a model's answer is its greedy next token after the
prompt (plain text, no chat template), decoded, stripped of surrounding whitespace and lowercased. It
is correct iff it is non-empty and equals the label's first token: the first token of the model's
tokenisation of " " + label that is not whitespace alone, decoded, stripped and lowercased. The
leading space makes a word label tokenise as it would after a prompt ("Paris" -> " Paris"); skipping
whitespace-only tokens handles tokenisers that split " 5" into " " and "5". The probe's arithmetic
answers are single digits and its prompts end in "Answer: ", so a single next token can be right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blockcert.arch.loading import load_run_model
from blockcert.arch.native import NativeModel
from blockcert.arch.probe import run_probe
from blockcert.errors import BlockCertError
from blockcert.present.progress import say
from blockcert.records.fullmodel import (
    CERTIFICATE_FILE,
    SEMANTIC_FILE,
    FullModelCertificate,
    SemanticRecord,
)
from blockcert.records.semantic import LABELLING, SemanticEvaluation, semantic_metrics
from blockcert.store.files import atomic_write_json, sha256_file
from blockcert.store.manifest import record_outputs
from blockcert.store.probe import load_probe
from blockcert.store.records_io import write_model_file
from blockcert.store.run_reader import (
    load_certified_ir,
    load_full_certificate,
    load_run_summary,
    stitched_block_certificates,
)


@dataclass(frozen=True)
class SemanticResult:
    evaluation: SemanticEvaluation
    certificate: FullModelCertificate


def run_semantic(
    run_dir: Path,
    model: str | None = None,
    device: str | None = None,
    probe_path: Path | None = None,
    batch_size: int = 8,
) -> SemanticResult:
    """Probe the model stitched as the full-model certificate says; record the result in that certificate."""
    if batch_size < 1:
        raise BlockCertError("--batch-size must be at least 1")
    probe = load_probe(probe_path)
    summary = load_run_summary(run_dir)
    cert = load_full_certificate(run_dir)
    certs = stitched_block_certificates(run_dir, summary, cert)
    say(f"loading {model or summary.model.name} ({summary.model.dtype})")
    lm = load_run_model(summary, model, device)
    native = NativeModel(lm)
    pr = run_probe(
        native,
        probe.items,
        set(cert.stitched_blocks),
        lambda i: load_certified_ir(run_dir, certs[i], native.device),
        batch_size,
    )
    evaluation = SemanticEvaluation(
        model=summary.model,
        probe_name=probe.name,
        probe_sha256=probe.sha256,
        stitched_blocks=cert.stitched_blocks,
        batch_size=batch_size,
        items=pr.items,
        metrics=semantic_metrics(pr.items),
    )
    atomic_write_json(run_dir / SEMANTIC_FILE, evaluation.model_dump(mode="json"))
    record = SemanticRecord(
        probe_name=probe.name,
        probe_sha256=probe.sha256,
        labelling=LABELLING,
        file=SEMANTIC_FILE,
        file_sha256=sha256_file(run_dir / SEMANTIC_FILE),
        metrics=evaluation.metrics,
    )
    cert = cert.model_copy(update={"semantic": record}).sealed()
    write_model_file(run_dir / CERTIFICATE_FILE, cert)
    record_outputs(run_dir, [SEMANTIC_FILE, CERTIFICATE_FILE])  # the manifest lists every file
    return SemanticResult(evaluation, cert)
