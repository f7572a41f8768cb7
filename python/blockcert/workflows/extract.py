"""`blockcert extract`: trace the native model once, extract a surrogate per block, measure, certify."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import torch

from blockcert.arch.loading import LoadedModel, load_model, model_info
from blockcert.arch.native import NativeModel, encode
from blockcert.arch.tracing import record_traces, release_freed_memory
from blockcert.core.digest import sha256_bytes
from blockcert.core.ir import BlockIR
from blockcert.core.metrics import Policy, Thresholds, block_metrics, per_prompt_metrics, verdict
from blockcert.core.replay import Measured, Replay, replay
from blockcert.core.selection import parse_blocks
from blockcert.core.tolerances import LOSS_ATOL, REPLAY_RTOL
from blockcert.core.traces import BlockTrace
from blockcert.errors import BlockCertError
from blockcert.present.progress import say
from blockcert.records.certificate import (
    BlockCertificate,
    SurrogateSize,
    Tolerances,
    TraceRounding,
    surrogate_size,
)
from blockcert.records.summary import RunSummary, entry_of
from blockcert.store import layout
from blockcert.store.files import ensure_writable_dir, json_bytes
from blockcert.store.prompts import PromptSet, load_prompts, prompt_info, prompts_file_bytes
from blockcert.store.run_files import RunWriter
from blockcert.store.tensors import (
    decode_spec,
    ir_files,
    narrowed,
    read_tensors_file,
    record_bytes,
    stored_trace,
    widened,
)
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
    trace_dtype: str | None = None  # x_in/x_out stored as bfloat16, float16 or float32 (None: the model's)


TRACE_DTYPES = ("bfloat16", "float16", "float32")
BATCH_SIZE = 8  # prompts per native chunk, unless extract is given another batch_size


def check_trace_dtype(trace_dtype: str | None) -> None:
    if trace_dtype is not None and trace_dtype not in TRACE_DTYPES:
        raise BlockCertError(f"--trace-dtype {trace_dtype!r} is not known; use one of {', '.join(TRACE_DTYPES)}")


def _trace_rounding(i: int, trace: BlockTrace, dtype: str) -> tuple[BlockTrace, TraceRounding]:
    """Block i's trace with x_in and x_out in `dtype`, and how far storing them so moved them."""
    stored, r_in, r_out = stored_trace(trace, dtype)
    worst = []
    for name, r in (("x_in", r_in), ("x_out", r_out)):
        native_ok = torch.isfinite(getattr(trace, name)).all(dim=-1) & trace.valid
        vals = r[native_ok]
        if not bool(torch.isfinite(vals).all()):
            raise BlockCertError(f"block {i}: {name} overflows {dtype} (activations beyond its range); use "
                                 "--trace-dtype bfloat16 or float32")
        worst.append(float(vals.max()) if vals.numel() else 0.0)
    return stored, TraceRounding(x_in=worst[0], x_out=worst[1])


def _certify_block(prompts_bytes: bytes, i, lm_info, pinfo, thresholds, policy, dtype, ir, trace, loss,
                   native_ir=None, *, written: dict[str, str] | None = None, trace_dtype: str | None = None,
                   rounding: TraceRounding | None = None, size: SurrogateSize | None = None,
                   chunk: int = BATCH_SIZE, measured: Measured | None = None):
    """Measure block i's surrogate on its traces: its sealed certificate and its files (path -> bytes).

    `native_ir` is the block's exact copy, for the size section (without it, the size of densify(ir));
    `size` is that section computed already (when the IR was derived). `written` lists the block's files
    already written (path -> SHA-256: its IR, spooled when derived); they are hashed into the certificate
    but neither serialised nor returned again. With `trace_dtype` (and its measured
    `rounding`), x_in and x_out are stored in that dtype and every number is measured on exactly the stored
    values, widened back to the model's dtype as the verifier widens them. `chunk` is the number of prompts
    the native pass ran at once (`batch_size`): the replay runs on the same chunks (see `_replay`);
    `measured` is that replay's result already computed by the tracing pass (record_traces), used when the
    traces are stored as recorded; `ir` may then be None if its files are `written` already.
    """
    bdir = f"block_{i:03d}"
    written = written or {}
    spooled = all(f"{bdir}/{name}" in written for name in (layout.IR_SPEC, layout.IR_TENSORS))
    ours = {} if spooled else {f"{bdir}/{name}": data for name, data in ir_files(ir).items()}
    if trace_dtype is not None:
        trace = narrowed(trace, trace_dtype)  # a no-op on a trace already stored so
    stored = trace
    trace = widened(trace, dtype)
    if measured is not None and trace_dtype is None:
        r = measured
    elif ir is None:
        raise ValueError(f"block {i}: no IR and no measurements to certify it from")  # a caller's bug
    else:
        r = _replay(ir, trace, chunk)
    ours[f"{bdir}/{layout.TRACES}"] = record_bytes(stored)  # serialised after the replay: never both at once
    ours[f"{bdir}/{layout.LOSSES}"] = record_bytes(loss)
    del stored
    args = (r.errors, r.out_norms, trace.valid, r.path_ok, loss.base_nll, loss.stitched_nll, loss.loss_ok)
    m = block_metrics(*args, thresholds)
    per_prompt = per_prompt_metrics(*args, thresholds)
    metrics_file = f"{bdir}/{layout.METRICS}"
    ours[metrics_file] = json_bytes(
        {"block_index": i, "metrics": m.model_dump(mode="json"),
         "per_prompt": [p.model_dump(mode="json") for p in per_prompt]}
    )
    digests = {**written, **{rel: sha256_bytes(data) for rel, data in ours.items()},
               layout.PROMPTS: sha256_bytes(prompts_bytes)}
    ok, reasons = verdict(m, policy)
    scale = max(1.0, m.max_output_norm or 1.0)
    cert = BlockCertificate(
        model=lm_info, block_index=i, prompts=pinfo, thresholds=thresholds, policy=policy,
        tolerances=Tolerances(replay_atol=REPLAY_RTOL[dtype] * scale, loss_atol=LOSS_ATOL[dtype]),
        metrics=m, metrics_file=metrics_file,
        artifacts=dict(sorted(digests.items())),
        certified=ok, reasons=tuple(reasons), size=size or surrogate_size(ir, native_ir),
        trace_dtype=trace_dtype, trace_rounding=rounding if trace_dtype is not None else None,
    ).sealed()
    ours[f"{bdir}/{layout.CERTIFICATE}"] = json_bytes(cert.model_dump(mode="json"))
    return cert, ours


def _replay(ir: BlockIR, trace: BlockTrace, chunk: int) -> Replay:
    """core.replay.replay on the chunks of `chunk` prompts the native pass ran (record_traces' chunks).

    The same chunks, not fewer prompts at a time: a matrix product's kernel, and with it the order of its
    sums, depends on the number of rows on some CPUs (MKL on AVX-512: an exact copy replayed two prompts at a
    time was off by 1e-5 from the native block run on eight), so only the native pass's own shapes make an
    exact copy's replay bit-identical. The interpreter's working set is then a native chunk's, as in tracing.
    """
    device = next(iter(ir.tensors.values())).device
    n = trace.x_in.shape[0]
    if n <= chunk:
        return replay(ir, trace, device=device)
    parts = [replay(ir, BlockTrace(*(getattr(trace, f.name)[lo:lo + chunk] for f in fields(BlockTrace))),
                    device=device) for lo in range(0, n, chunk)]
    return Replay(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Replay)))


def _certify_item(prompts_bytes, lm_info, pinfo, thresholds, policy, dtype, trace_dtype, chunk, item):
    """One task of the executor: an item carries block i's own IR (or its loader), traces and losses only."""
    i, ir, trace, loss, rounding, written, size, measured = item
    if callable(ir):
        ir = ir()
    return _certify_block(prompts_bytes, i, lm_info, pinfo, thresholds, policy, dtype, ir, trace, loss,
                          written=written, trace_dtype=trace_dtype, rounding=rounding, size=size, chunk=chunk,
                          measured=measured)


def summary_of(lm_info, pinfo, opts_thresholds, opts_policy, certs: list[BlockCertificate],
               files: dict[str, bytes] | None = None, digests: dict[str, str] | None = None) -> RunSummary:
    """The sealed run manifest: an entry per certificate (its own numbers), and the digest of every file
    (of `files`' bytes, or as `digests` records them for files already written)."""
    entries = tuple(entry_of(c) for c in sorted(certs, key=lambda c: c.block_index))
    listed = {rel: sha256_bytes(data) for rel, data in (files or {}).items()} | dict(digests or {})
    return RunSummary(
        model=lm_info, prompts=pinfo, thresholds=opts_thresholds, policy=opts_policy, blocks=entries,
        all_certified=all(e.certified for e in entries),
    ).with_files({rel: d for rel, d in listed.items() if rel != layout.SUMMARY})


def extract_run(
    lm: LoadedModel,
    ps: PromptSet,
    blocks: list[int],
    surrogate: str = "exact",
    thresholds: Thresholds = Thresholds(),
    policy: Policy = Policy(),
    batch_size: int = BATCH_SIZE,
    executor: Executor | None = None,
    out: Path | None = None,
    trace_dtype: str | None = None,
) -> Run:
    """Trace once, derive and certify a surrogate per block.

    Without `out` the whole run is held in memory and nothing is written. With `out` every block's files
    go to disk as soon as they exist and are dropped from memory: its IR when it is derived (at its layer
    of the tracing pass), its traces, losses and metrics when it is certified; certificates and the
    manifest are written last, after every artifact. Memory then holds the model, the traces and one
    block's IR, whatever the number of blocks; the returned Run refers to `out`. The bytes are the same
    either way. `trace_dtype` stores x_in and x_out in that dtype (see `_certify_block`)."""
    check_trace_dtype(trace_dtype)
    executor = executor or LocalExecutor()
    native = NativeModel(lm)
    batch = encode(lm, ps.prompts)
    sink = RunWriter(out, blocks)
    try:
        return _extract(lm, native, batch, ps, blocks, surrogate, thresholds, policy, batch_size, executor, sink,
                        trace_dtype)
    except BaseException:
        sink.discard()
        raise


def _extract(lm, native, batch, ps, blocks, surrogate, thresholds, policy, batch_size, executor, sink,
             trace_dtype) -> Run:
    prompts_bytes = prompts_file_bytes(ps, batch)
    sink.put(layout.PROMPTS, prompts_bytes)
    lm_info, pinfo = model_info(lm, native.device), prompt_info(ps, batch)
    irs: dict[int, BlockIR] = {}  # in memory only; on disk each IR is written when derived and re-read
    written: dict[int, dict[str, str]] = {i: {} for i in blocks}
    sizes: dict[int, SurrogateSize] = {}

    def surrogate_of(i: int) -> BlockIR:
        exact = native.extract_ir(i)  # the model's own tensors, not a copy (arch.base.copy_tensor)
        ir = derive_named(exact, surrogate)
        sizes[i] = surrogate_size(ir, exact)
        del exact
        if sink.on_disk:
            bdir = f"block_{i:03d}"
            spec_rel, tensors_rel = f"{bdir}/{layout.IR_SPEC}", f"{bdir}/{layout.IR_TENSORS}"
            written[i][spec_rel] = sink.put(spec_rel, ir_files(ir, tensors=False)[layout.IR_SPEC])
            written[i][tensors_rel] = sink.put_tensors(tensors_rel, ir.tensors)  # the bytes ir_files gives
        else:
            irs[i] = ir
        return ir

    measured: dict[int, Measured] = {}  # each block's replay on its native chunks, done while tracing
    traces, losses = record_traces(native, batch, blocks, surrogate_of, batch_size,
                                   measured if trace_dtype is None else None)
    rounding: dict[int, TraceRounding | None] = dict.fromkeys(blocks)
    if trace_dtype is not None:
        for i in blocks:
            traces[i], rounding[i] = _trace_rounding(i, traces[i], trace_dtype)
    # Each task carries only its own block's data, so a cluster executor ships no other block's traces. In
    # this process a spooled IR is re-read when its task runs; elsewhere it travels with the task.
    certify = partial(_certify_item, prompts_bytes, lm_info, pinfo, thresholds, policy, lm.dtype, trace_dtype,
                      batch_size)

    def ir_item(i: int):
        if not sink.on_disk:
            return irs.pop(i)
        if i in measured:  # certified from the tracing pass's measurements: the spooled IR is not read again
            return None
        load = partial(_spooled_ir, sink, i)
        return load if executor.in_process else load()

    items = ((i, ir_item(i), traces.pop(i), losses.pop(i), rounding[i], written[i], sizes[i], measured.pop(i, None))
             for i in blocks)
    verdicts: dict[str, bytes] = {}

    def keep(_k: int, result) -> BlockCertificate:
        cert, block_files = result
        for rel in sorted(block_files):
            if rel.endswith(f"/{layout.CERTIFICATE}"):
                verdicts[rel] = block_files[rel]  # written after every block's artifacts
            else:
                sink.put(rel, block_files[rel])
        release_freed_memory()
        return cert

    certs = executor.map(certify, items, "certifying blocks", on_result=keep)
    for rel in sorted(verdicts):
        sink.put(rel, verdicts[rel])
    summary = summary_of(lm_info, pinfo, thresholds, policy, certs, digests=sink.digests)
    sink.put(layout.SUMMARY, json_bytes(summary.model_dump(mode="json")))
    return Run(summary=summary, certificates={c.block_index: c for c in certs}, files=sink.all_files(),
               path=sink.run_dir)


def _spooled_ir(sink: RunWriter, i: int) -> BlockIR:
    """Block i's IR as written when it was derived (its bytes checked against the digests recorded then)."""
    bdir = f"block_{i:03d}"
    spec = decode_spec(sink.get(f"{bdir}/{layout.IR_SPEC}"), f"{bdir}/{layout.IR_SPEC}")
    rel = f"{bdir}/{layout.IR_TENSORS}"
    return BlockIR(spec, read_tensors_file(sink.run_dir / rel, rel, sink.digests[rel]))


def run_extract(opts: ExtractOptions, lm: LoadedModel | None = None) -> RunSummary:
    """`blockcert extract`: the run of `opts`, saved to `opts.out`.

    Each block's files are written as soon as they exist (extract_run). An output directory this call
    created is removed again if the extract fails (the files it wrote are removed first), so a failed
    extract leaves nothing behind."""
    created = not opts.out.exists()
    try:
        check_trace_dtype(opts.trace_dtype)
        ensure_writable_dir(opts.out)
        ps = load_prompts(opts.prompts)
        if lm is None:
            say(f"loading {opts.model} ({opts.dtype}, {opts.device})")
            lm = load_model(opts.model, opts.dtype, opts.device, streaming=opts.streaming)
        blocks = parse_blocks(opts.blocks, lm.num_layers)
        executor = executor_for(opts.executor, opts.ray_address)
        run = extract_run(lm, ps, blocks, opts.surrogate, opts.thresholds, opts.policy, opts.batch_size, executor,
                          out=opts.out, trace_dtype=opts.trace_dtype)
    except BaseException:
        if created and opts.out.is_dir() and not any(opts.out.iterdir()):
            opts.out.rmdir()
        raise
    return run.summary
