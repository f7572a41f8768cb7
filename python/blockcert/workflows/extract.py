"""`blockcert extract`: trace the native model once, extract a surrogate per block, measure, certify."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from blockcert.arch.loading import LoadedModel, load_model, model_info
from blockcert.arch.native import NativeModel, encode
from blockcert.arch.tracing import record_traces
from blockcert.core.digest import sha256_bytes
from blockcert.core.metrics import Policy, Thresholds, block_metrics, per_prompt_metrics, verdict
from blockcert.core.replay import replay
from blockcert.core.selection import parse_blocks
from blockcert.core.tolerances import LOSS_ATOL, REPLAY_RTOL
from blockcert.present.progress import say
from blockcert.records.certificate import BlockCertificate, Tolerances, surrogate_size
from blockcert.records.summary import RunSummary, entry_of
from blockcert.store import layout
from blockcert.store.files import ensure_writable_dir, json_bytes
from blockcert.store.prompts import PromptSet, load_prompts, prompt_info, prompts_file_bytes
from blockcert.store.tensors import ir_files, record_bytes
from blockcert.surrogates import derive_named
from blockcert.workflows.executor import Executor, LocalExecutor, executor_for
from blockcert.workflows.run import Run


@dataclass(frozen=True)
class ExtractOptions:
    model: str
    prompts: str
    blocks: str
    out: Path
    dtype: str = "float32"
    device: str = "cpu"
    thresholds: Thresholds = Thresholds()
    policy: Policy = Policy()
    batch_size: int = 8
    surrogate: str = "exact"  # a kind of the surrogate registry (surrogates/)
    streaming: bool = False  # decoder layers read from their shards one at a time (arch/streaming.py)
    executor: str = "local"  # workflows/executor.py: local, or ray
    ray_address: str | None = None














def _certify_block(prompts_bytes: bytes, i, lm_info, pinfo, thresholds, policy, dtype, ir, trace, loss,
                   native_ir=None):
    """Measure block i's surrogate on its traces: its sealed certificate and its files (path -> bytes).

    `native_ir` is the block's exact copy, for the size section (without it, the size of densify(ir)).
    """
    bdir = f"block_{i:03d}"
    ours = {f"{bdir}/{name}": data for name, data in ir_files(ir).items()}
    ours[f"{bdir}/{layout.TRACES}"] = record_bytes(trace)
    ours[f"{bdir}/{layout.LOSSES}"] = record_bytes(loss)
    r = replay(ir, trace, device=next(iter(ir.tensors.values())).device)
    args = (r.errors, r.out_norms, trace.valid, r.path_ok, loss.base_nll, loss.stitched_nll, loss.loss_ok)
    m = block_metrics(*args, thresholds)
    per_prompt = per_prompt_metrics(*args, thresholds)
    metrics_file = f"{bdir}/{layout.METRICS}"
    ours[metrics_file] = json_bytes(
        {"block_index": i, "metrics": m.model_dump(mode="json"),
         "per_prompt": [p.model_dump(mode="json") for p in per_prompt]}
    )
    hashed = {**ours, layout.PROMPTS: prompts_bytes}
    ok, reasons = verdict(m, policy)
    scale = max(1.0, m.max_output_norm or 1.0)
    cert = BlockCertificate(
        model=lm_info, block_index=i, prompts=pinfo, thresholds=thresholds, policy=policy,
        tolerances=Tolerances(replay_atol=REPLAY_RTOL[dtype] * scale, loss_atol=LOSS_ATOL[dtype]),
        metrics=m, metrics_file=metrics_file,
        artifacts={rel: sha256_bytes(data) for rel, data in sorted(hashed.items())},
        certified=ok, reasons=tuple(reasons), size=surrogate_size(ir, native_ir),
    ).sealed()
    ours[f"{bdir}/{layout.CERTIFICATE}"] = json_bytes(cert.model_dump(mode="json"))
    return cert, ours


def _certify_item(prompts_bytes, lm_info, pinfo, thresholds, policy, dtype, item):
    """One task of the executor: an item carries block i's own IR, traces and losses only."""
    i, ir, trace, loss = item
    return _certify_block(prompts_bytes, i, lm_info, pinfo, thresholds, policy, dtype, ir, trace, loss)


def summary_of(lm_info, pinfo, opts_thresholds, opts_policy, certs: list[BlockCertificate],
               files: dict[str, bytes] | None = None) -> RunSummary:
    """The sealed run manifest: an entry per certificate (its own numbers), and the digest of every file."""
    entries = tuple(entry_of(c) for c in sorted(certs, key=lambda c: c.block_index))
    return RunSummary(
        model=lm_info, prompts=pinfo, thresholds=opts_thresholds, policy=opts_policy, blocks=entries,
        all_certified=all(e.certified for e in entries),
    ).with_files({rel: sha256_bytes(data) for rel, data in (files or {}).items() if rel != layout.SUMMARY})


def extract_run(
    lm: LoadedModel,
    ps: PromptSet,
    blocks: list[int],
    surrogate: str = "exact",
    thresholds: Thresholds = Thresholds(),
    policy: Policy = Policy(),
    batch_size: int = 8,
    executor: Executor | None = None,
) -> Run:
    """Trace once, derive and certify a surrogate per block: the whole run in memory (nothing is written)."""
    native = NativeModel(lm)
    batch = encode(lm, ps.prompts)
    irs = {i: derive_named(native.extract_ir(i), surrogate) for i in blocks}
    traces, losses = record_traces(native, batch, blocks, irs, batch_size)
    files = {layout.PROMPTS: prompts_file_bytes(ps, batch)}
    lm_info, pinfo = model_info(lm, native.device), prompt_info(ps, batch)
    # Each task carries only its own block's data, so a cluster executor ships no other block's traces.
    certify = partial(_certify_item, files[layout.PROMPTS], lm_info, pinfo, thresholds, policy, lm.dtype)
    items = [(i, irs[i], traces[i], losses[i]) for i in blocks]
    certs = []
    for cert, block_files in (executor or LocalExecutor()).map(certify, items, "certifying blocks"):
        certs.append(cert)
        files.update(block_files)
    summary = summary_of(lm_info, pinfo, thresholds, policy, certs, files)
    files[layout.SUMMARY] = json_bytes(summary.model_dump(mode="json"))
    return Run(summary=summary, certificates={c.block_index: c for c in certs}, files=files)


def run_extract(opts: ExtractOptions, lm: LoadedModel | None = None) -> RunSummary:
    """`blockcert extract`: the run of `opts`, saved to `opts.out`.

    An output directory this call created is removed again (when still empty) if the extract fails, so a
    failed extract leaves nothing behind."""
    created = not opts.out.exists()
    try:
        ensure_writable_dir(opts.out)
        ps = load_prompts(opts.prompts)
        if lm is None:
            say(f"loading {opts.model} ({opts.dtype}, {opts.device})")
            lm = load_model(opts.model, opts.dtype, opts.device, streaming=opts.streaming)
        blocks = parse_blocks(opts.blocks, lm.num_layers)
        executor = executor_for(opts.executor, opts.ray_address)
        run = extract_run(lm, ps, blocks, opts.surrogate, opts.thresholds, opts.policy, opts.batch_size, executor)
        run.save(opts.out)
    except BaseException:
        if created and opts.out.is_dir() and not any(opts.out.iterdir()):
            opts.out.rmdir()
        raise
    return run.summary
