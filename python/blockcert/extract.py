"""`blockcert extract`: trace the native model once, extract a surrogate per block, measure, certify."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import layout
from .certificate import BlockCertificate, ModelInfo, PromptInfo, Tolerances, write_model_file
from .errors import BlockCertError
from .files import atomic_write_json, canonical_json, ensure_writable_dir, sha256_bytes, sha256_file
from .interpreter import run_block
from .ir import SurrogateKind, extract_ir, simplify
from .loading import LoadedModel, load_model
from .metrics import Policy, Thresholds, block_metrics, per_prompt_metrics, verdict
from .native import Batch, NativeModel, encode, next_token_nll
from .progress import say, track
from .prompts import PromptSet, load_prompts
from .replay import replay
from .summary import BlockEntry, RunSummary
from .traces import BlockTrace, LossTrace

# Relative replay tolerance per dtype: far above float rounding, far below any real disagreement.
REPLAY_RTOL = {"float32": 1e-5, "float64": 1e-12}
LOSS_ATOL = {"float32": 1e-4, "float64": 1e-10}


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
    surrogate: SurrogateKind = "exact"


def parse_blocks(spec: str, num_layers: int) -> list[int]:
    if spec.strip() == "all":
        return list(range(num_layers))
    out = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                idx = range(lo, hi + 1)
            else:
                idx = [int(part)]
        except ValueError:
            raise BlockCertError(f"--blocks {spec!r}: expected indices like 0,5,10 or 3-7 or all") from None
        for i in idx:
            if not 0 <= i < num_layers:
                raise BlockCertError(
                    f"block index {i} is out of range: the model has {num_layers} blocks (0..{num_layers - 1})"
                )
            out.add(i)
    if not out:
        raise BlockCertError(f"--blocks {spec!r} names no block")
    return sorted(out)


def model_info(lm: LoadedModel, device: torch.device) -> ModelInfo:
    return ModelInfo(
        name=lm.name, source=lm.source, architecture=lm.architecture, family=lm.family,
        num_layers=lm.num_layers, weights_sha256=lm.weights_sha256, dtype=lm.dtype, device=device.type,
    )


def prompt_info(ps: PromptSet, batch: Batch) -> PromptInfo:
    ids = [row[m].tolist() for row, m in zip(batch.ids, batch.valid, strict=True)]
    return PromptInfo(
        name=ps.name, description=ps.description, sha256=ps.sha256,
        token_ids_sha256=sha256_bytes(canonical_json(ids).encode()),
        n_prompts=len(ps.prompts), n_tokens=int(batch.valid.sum()),
    )


def write_prompts_file(run_dir: Path, ps: PromptSet, batch: Batch) -> None:
    ids = [row[m].tolist() for row, m in zip(batch.ids, batch.valid, strict=True)]
    atomic_write_json(
        run_dir / layout.PROMPTS,
        {"name": ps.name, "description": ps.description, "prompts": list(ps.prompts), "token_ids": ids},
    )


@torch.no_grad()
def _record(native: NativeModel, batch: Batch, blocks: list[int], irs: dict, batch_size: int):
    """One native pass per chunk of prompts: block traces, native decisions, base and stitched losses."""
    keep = set(blocks)
    cols: dict[int, list] = {i: [] for i in blocks}
    losses: dict[int, list] = {i: [] for i in blocks}
    n = batch.ids.shape[0]
    chunks = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    for lo, hi in track(chunks, "tracing native model", total=len(chunks)):
        b = batch.rows(lo, hi)
        x, ctx = native.embed(b)
        mask = native.attention_mask_bool(ctx, b)
        argmax: dict[int, torch.Tensor] = {}
        hooks = [native.attention(i).register_forward_hook(_keep_argmax(argmax, i)) for i in blocks]
        ins: dict[int, torch.Tensor] = {}
        try:
            for i in range(len(native.layers)):
                if i in keep:
                    ins[i] = x
                y = native.block(i, x, ctx)
                if i in keep:
                    cols[i].append((x.cpu(), y.cpu(), mask, argmax[i]))
                x = y
        finally:
            for h in hooks:
                h.remove()
        base, ok = next_token_nll(native.logits(x), b)
        for i in blocks:
            x_hat = _surrogate(irs[i], ins[i], b)
            stitched, _ = next_token_nll(native.run_from(i + 1, x_hat, ctx), b)
            losses[i].append((base, stitched, ok))
    traces = {}
    for i in blocks:
        x_in, x_out, mask, am = (torch.cat(c) for c in zip(*cols[i], strict=True))
        traces[i] = BlockTrace(x_in, x_out, batch.valid.clone(), batch.positions, mask, am)
    loss = {i: LossTrace(*(torch.cat(c) for c in zip(*losses[i], strict=True))) for i in blocks}
    return traces, loss


def _keep_argmax(store: dict, i: int):
    """Forward hook: keep the native attention's most-attended key per head (eager returns the probabilities)."""

    def hook(_module, _args, out):
        store[i] = out[1].argmax(dim=-1).cpu()

    return hook


def _surrogate(ir, x: torch.Tensor, b: Batch) -> torch.Tensor:
    return run_block(ir, x, b.valid.to(x.device), b.positions.to(x.device))


def _certify_block(run_dir, i, lm_info, pinfo, opts, ir, trace, loss) -> BlockCertificate:
    bdir = layout.block_dir(run_dir, i)
    bdir.mkdir(parents=True, exist_ok=True)
    files = [bdir / f for f in ir.save(bdir)]
    trace.save(bdir / layout.TRACES)
    loss.save(bdir / layout.LOSSES)
    files += [bdir / layout.TRACES, bdir / layout.LOSSES]
    r = replay(ir, trace, device=ir.tensors["attn.q.weight"].device)
    args = (r.errors, r.out_norms, trace.valid, r.path_ok, loss.base_nll, loss.stitched_nll, loss.loss_ok)
    m = block_metrics(*args, opts.thresholds)
    per_prompt = per_prompt_metrics(*args, opts.thresholds)
    atomic_write_json(
        bdir / layout.METRICS,
        {"block_index": i, "metrics": m.model_dump(mode="json"),
         "per_prompt": [p.model_dump(mode="json") for p in per_prompt]},
    )
    files.append(bdir / layout.METRICS)
    files.append(run_dir / layout.PROMPTS)
    ok, reasons = verdict(m, opts.policy)
    scale = max(1.0, m.max_output_norm or 1.0)
    cert = BlockCertificate(
        model=lm_info, block_index=i, prompts=pinfo, thresholds=opts.thresholds, policy=opts.policy,
        tolerances=Tolerances(replay_atol=REPLAY_RTOL[opts.dtype] * scale, loss_atol=LOSS_ATOL[opts.dtype]),
        metrics=m, metrics_file=layout.rel(run_dir, bdir / layout.METRICS),
        artifacts={layout.rel(run_dir, f): sha256_file(f) for f in sorted(files)},
        certified=ok, reasons=tuple(reasons),
    ).sealed()
    write_model_file(bdir / layout.CERTIFICATE, cert)  # last: its presence means the block is complete
    return cert


def summary_of(lm_info, pinfo, opts_thresholds, opts_policy, certs: list[BlockCertificate]) -> RunSummary:
    entries = tuple(
        BlockEntry(
            index=c.block_index, certified=c.certified, epsilon=c.metrics.epsilon, mae=c.metrics.mae,
            max_relative_error=c.metrics.max_relative_error, cov_act=c.metrics.cov_act,
            cov_path=c.metrics.cov_path, cov_loss=c.metrics.cov_loss, n_tokens=c.metrics.n_tokens,
            certificate=f"block_{c.block_index:03d}/{layout.CERTIFICATE}", digest=c.digest,
        )
        for c in certs
    )
    return RunSummary(
        model=lm_info, prompts=pinfo, thresholds=opts_thresholds, policy=opts_policy, blocks=entries,
        all_certified=all(e.certified for e in entries),
    )


def run_extract(opts: ExtractOptions, lm: LoadedModel | None = None) -> RunSummary:
    run_dir = opts.out
    ensure_writable_dir(run_dir)
    ps = load_prompts(opts.prompts)
    if lm is None:
        say(f"loading {opts.model} ({opts.dtype}, {opts.device})")
        lm = load_model(opts.model, opts.dtype, opts.device)
    blocks = parse_blocks(opts.blocks, lm.num_layers)
    native = NativeModel(lm)
    batch = encode(lm, ps.prompts)
    # Nothing stale may stand beside new artifacts looking valid: drop verdicts first, write them last.
    (run_dir / layout.SUMMARY).unlink(missing_ok=True)
    for i in blocks:
        (layout.block_dir(run_dir, i) / layout.CERTIFICATE).unlink(missing_ok=True)
    irs = {i: simplify(extract_ir(native, i), opts.surrogate) for i in blocks}
    traces, losses = _record(native, batch, blocks, irs, opts.batch_size)
    write_prompts_file(run_dir, ps, batch)
    lm_info, pinfo = model_info(lm, native.device), prompt_info(ps, batch)
    certs = []
    for i in track(blocks, "certifying blocks", total=len(blocks)):
        certs.append(_certify_block(run_dir, i, lm_info, pinfo, opts, irs[i], traces[i], losses[i]))
    summary = summary_of(lm_info, pinfo, opts.thresholds, opts.policy, certs)
    write_model_file(run_dir / layout.SUMMARY, summary)
    return summary
