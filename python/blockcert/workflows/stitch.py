"""`blockcert stitch`: replay the native and the stitched model side by side; write the full-model certificate.

Both residual streams advance together, layer-major over every chunk of prompts: for each layer the
native block moves the baseline stream, and either the native block or the layer's surrogate moves the
stitched stream. A surrogate is loaded (and checked against its certificate) only when its layer comes
up and dropped right after, so at most one block's surrogate lives beside the model's own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blockcert.arch.loading import load_run_model
from blockcert.arch.native import NativeModel
from blockcert.arch.stitched import layer_deviations, paired_replay, prompt_evaluations, tolerances_for
from blockcert.errors import BlockCertError
from blockcert.present.progress import say
from blockcert.records.fullmodel import (
    CERTIFICATE_FILE,
    EVALUATION_FILE,
    SEMANTIC_FILE,
    BlockRef,
    FullModelCertificate,
    FullModelEvaluation,
    FullModelPolicy,
    full_verdict,
    global_metrics,
)
from blockcert.store import layout
from blockcert.store.files import atomic_write_json, sha256_file
from blockcert.store.manifest import record_outputs
from blockcert.store.records_io import write_model_file
from blockcert.store.run_reader import (
    block_certificate,
    certified_batch,
    load_certified_ir,
    load_run_summary,
    require_certified_prompts,
    select_blocks,
)


@dataclass(frozen=True)
class StitchOptions:
    run_dir: Path
    blocks: str | None = None  # None: every block the run has a surrogate for
    prompts: str | None = None  # None: the certified prompts; otherwise must be the same set
    model: str | None = None  # None: the model the run records
    device: str | None = None  # None: the run's device
    batch_size: int = 8
    policy: FullModelPolicy = FullModelPolicy()


@dataclass(frozen=True)
class StitchResult:
    evaluation: FullModelEvaluation
    certificate: FullModelCertificate


def run_stitch(opts: StitchOptions) -> StitchResult:
    run_dir = opts.run_dir
    if opts.batch_size < 1:
        raise BlockCertError("--batch-size must be at least 1")
    summary = load_run_summary(run_dir)
    blocks = select_blocks(summary, opts.blocks)
    if opts.prompts is not None:
        require_certified_prompts(summary, opts.prompts)
    certs = {i: block_certificate(run_dir, summary, i) for i in blocks}
    say(f"loading {opts.model or summary.model.name} ({summary.model.dtype})")
    lm = load_run_model(summary, opts.model, opts.device)
    native = NativeModel(lm)
    batch = certified_batch(run_dir, summary, lm.pad_token_id)
    replay = paired_replay(
        native, batch, set(blocks), lambda i: load_certified_ir(run_dir, certs[i], native.device), opts.batch_size
    )
    layers = layer_deviations(replay, set(blocks), lm.config.hidden_size)
    per_prompt = prompt_evaluations(replay)
    metrics = global_metrics(layers, per_prompt)
    info = summary.model
    evaluation = FullModelEvaluation(
        model=info,
        prompts=summary.prompts,
        stitched_blocks=tuple(blocks),
        batch_size=opts.batch_size,
        device=native.device.type,
        layers=layers,
        per_prompt=per_prompt,
        metrics=metrics,
    )
    refs = tuple(
        BlockRef(index=i, certificate=f"block_{i:03d}/{layout.CERTIFICATE}", digest=c.digest, certified=c.certified)
        for i, c in certs.items()
    )
    ok, reasons = full_verdict(metrics, opts.policy, refs)
    # Nothing stale may stand beside new numbers looking valid: drop the verdict first, write it last.
    (run_dir / CERTIFICATE_FILE).unlink(missing_ok=True)
    (run_dir / SEMANTIC_FILE).unlink(missing_ok=True)  # it belonged to the previous certificate
    atomic_write_json(run_dir / EVALUATION_FILE, evaluation.model_dump(mode="json"))
    cert = FullModelCertificate(
        model=info,
        prompts=summary.prompts,
        stitched_blocks=tuple(blocks),
        block_certificates=refs,
        evaluation_file=EVALUATION_FILE,
        evaluation_sha256=sha256_file(run_dir / EVALUATION_FILE),
        tolerances=tolerances_for(summary.model.dtype, layers),
        policy=opts.policy,
        metrics=metrics,
        certified=ok,
        reasons=tuple(reasons),
    ).sealed()
    write_model_file(run_dir / CERTIFICATE_FILE, cert)
    record_outputs(run_dir, [EVALUATION_FILE, CERTIFICATE_FILE, SEMANTIC_FILE])  # the manifest lists every file
    return StitchResult(evaluation, cert)
