"""TODO-DOC"""

from __future__ import annotations

import torch

from blockcert.arch.native import NativeModel, next_token_nll
from blockcert.core.batch import Batch
from blockcert.core.interpreter import run_block
from blockcert.core.traces import BlockTrace, LossTrace
from blockcert.present.progress import track


@torch.no_grad()
def record_traces(native: NativeModel, batch: Batch, blocks: list[int], irs: dict, batch_size: int):
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
