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

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from .certificate import ModelInfo, write_model_file
from .errors import BlockCertError
from .files import atomic_write_json, canonical_json, sha256_bytes, sha256_file
from .fullmodel import CERTIFICATE_FILE, SEMANTIC_FILE, FullModelCertificate, SemanticMetrics, SemanticRecord
from .native import NativeModel, encode
from .progress import say
from .records import Frozen
from .runinputs import load_certified_ir, load_run, load_run_model
from .stitch import PairedReplay, load_full_certificate, paired_replay, stitched_block_certificates

LABELLING = "blockcert.first-token/1"
SEMANTIC_SCHEMA = "blockcert.semantic-probe-eval/1"


class ProbeItem(Frozen):
    category: str
    prompt: str
    label: str


class Probe(Frozen):
    name: str
    description: str
    labelling: Literal["blockcert.first-token/1"]
    items: tuple[ProbeItem, ...]

    @property
    def sha256(self) -> str:
        return probe_sha256(self.items)


def probe_sha256(items: tuple[ProbeItem, ...] | list[ProbeItem]) -> str:
    """Hash of the (category, prompt, label) triples alone: a renamed copy hashes the same."""
    return sha256_bytes(canonical_json([i.model_dump(mode="json") for i in items]).encode("utf-8"))


def load_probe(path: Path | None = None) -> Probe:
    """The bundled probe, or a JSON file of the same shape."""
    if path is None:
        text = resources.files("blockcert").joinpath("data/semantic_probe.json").read_text("utf-8")
        where = "bundled semantic probe"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BlockCertError(f"probe file {path} does not exist") from None
        except UnicodeDecodeError:
            raise BlockCertError(f"probe file {path} is not valid UTF-8") from None
        where = f"probe file {path}"
    try:
        probe = Probe.model_validate(json.loads(text))
    except json.JSONDecodeError as e:
        raise BlockCertError(f"{where} is not valid JSON ({e})") from None
    except ValidationError as e:
        first = e.errors()[0]
        raise BlockCertError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if not probe.items:
        raise BlockCertError(f"{where} holds no items")
    if any(not i.prompt or not i.label.strip() for i in probe.items):
        raise BlockCertError(f"{where}: every item needs a non-empty prompt and label")
    return probe


def answer_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id]).strip().lower()


def label_first_token(tokenizer, label: str) -> str:
    for tid in tokenizer(" " + label.strip(), add_special_tokens=False)["input_ids"]:
        text = answer_text(tokenizer, tid)
        if text:
            return text
    return ""


def is_correct(answer: str, label_token: str) -> bool:
    return bool(answer) and answer == label_token


class SemanticItem(Frozen):
    index: int
    category: str
    prompt: str
    label: str
    label_token: str  # the label's first token under the convention
    baseline_token: int
    baseline_answer: str
    stitched_token: int
    stitched_answer: str


def semantic_metrics(items: tuple[SemanticItem, ...]) -> SemanticMetrics:
    """Fidelity and correctness counts, from the recorded answers alone (the verifier reruns this)."""
    n = len(items)
    agreed = sum(i.stitched_token == i.baseline_token for i in items)
    base = sum(is_correct(i.baseline_answer, i.label_token) for i in items)
    stit = sum(is_correct(i.stitched_answer, i.label_token) for i in items)
    return SemanticMetrics(
        n_prompts=n,
        fidelity_agreed=agreed,
        fidelity=agreed / n if n else 0.0,
        baseline_correct=base,
        baseline_accuracy=base / n if n else 0.0,
        stitched_correct=stit,
        stitched_accuracy=stit / n if n else 0.0,
    )


class SemanticEvaluation(Frozen):
    """full_model_semantic.json."""

    schema_version: Literal["blockcert.semantic-probe-eval/1"] = SEMANTIC_SCHEMA
    model: ModelInfo
    probe_name: str
    probe_sha256: str
    labelling: Literal["blockcert.first-token/1"] = LABELLING
    stitched_blocks: tuple[int, ...]
    batch_size: int
    items: tuple[SemanticItem, ...]
    metrics: SemanticMetrics


@dataclass(frozen=True)
class ProbeRun:
    items: tuple[SemanticItem, ...]
    replay: PairedReplay
    last: list[int]  # index of each prompt's last token


def run_probe(native: NativeModel, probe_items: tuple[ProbeItem, ...], stitched: set[int], load_ir, batch_size: int):
    """Greedy next token of the baseline and the stitched model after each probe prompt."""
    tok = native.lm.tokenizer
    batch = encode(native.lm, tuple(i.prompt for i in probe_items))
    r = paired_replay(native, batch, stitched, load_ir, batch_size, label="semantic probe")
    last = [int(row.sum()) - 1 for row in batch.valid]
    items = []
    for k, (item, t) in enumerate(zip(probe_items, last, strict=True)):
        b, s = int(r.base_next[k, t]), int(r.stitched_next[k, t])
        items.append(
            SemanticItem(
                index=k,
                category=item.category,
                prompt=item.prompt,
                label=item.label,
                label_token=label_first_token(tok, item.label),
                baseline_token=b,
                baseline_answer=answer_text(tok, b),
                stitched_token=s,
                stitched_answer=answer_text(tok, s),
            )
        )
    return ProbeRun(tuple(items), r, last)


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
    summary = load_run(run_dir)
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
    return SemanticResult(evaluation, cert)
