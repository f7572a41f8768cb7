"""Tracing the native model: every requested block's inputs, outputs and decisions, and the losses.

Cost: one native forward per chunk of prompts, plus, for loss coverage, the stitched suffix of each block
(blocks i+1..L-1 run on the surrogate's output). The suffix is skipped for a chunk whose surrogate output
is bit-identical to the native output on every token: the suffix is then the native suffix on the same
input, so its losses are the base losses exactly (this is the floor of an exact-copy extraction: one
forward, no suffix at all).
"""

from __future__ import annotations

import torch

from blockcert.arch.native import NativeModel, next_token_nll
from blockcert.core.batch import Batch
from blockcert.core.interpreter import run_block
from blockcert.core.traces import BlockTrace, LossTrace
from blockcert.present.progress import track


@torch.no_grad()
def record_traces(native: NativeModel, batch: Batch, blocks: list[int], irs: dict, batch_size: int):
    """Block traces, native decisions, base and stitched losses, visiting each layer once.

    The loop is layer-outer: at layer j the native stream of every chunk and every live stitched stream
    (block i < j's surrogate output, continuing through the native suffix) advance together, so a
    streaming model (arch/streaming.py) holds one layer's weights at a time and reads each layer once.
    Every block call sees exactly the chunk it would see in a chunk-by-chunk pass, so the numbers are
    the same.
    """
    keep = set(blocks)
    n = batch.ids.shape[0]
    chunks = [batch.rows(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    embedded = [native.embed(b) for b in chunks]
    base = [x for x, _ in embedded]
    ctxs = [ctx for _, ctx in embedded]
    masks = {j: [native.attention_mask_bool(ctx, b, j) for (_, ctx), b in zip(embedded, chunks, strict=True)]
             for j in blocks}
    cols: dict[int, list] = {i: [] for i in blocks}
    stitched: dict[tuple[int, int], torch.Tensor] = {}  # (block, chunk) -> stitched stream still running
    for j in track(range(len(native.layers)), "tracing native model (layers)", total=len(native.layers)):
        with native.materialized(j):
            for c, b in enumerate(chunks):
                x = base[c]
                if j in keep:
                    argmax: dict[int, torch.Tensor] = {}
                    hook = native.attention(j).register_forward_hook(_keep_argmax(argmax, j))
                    try:
                        y = native.block(j, x, ctxs[c])
                    finally:
                        hook.remove()
                    cols[j].append((x.cpu(), y.cpu(), masks[j][c], argmax[j]))
                    x_hat = _surrogate(irs[j], x, b)
                    # Bit-identical output: the suffix would be the native suffix on the same input, so its
                    # losses are the base losses exactly; no stitched stream is needed.
                    if not torch.equal(x_hat, y):
                        stitched[(j, c)] = x_hat
                else:
                    y = native.block(j, x, ctxs[c])
                for key in [k for k in stitched if k[1] == c and k[0] < j]:
                    stitched[key] = native.block(j, stitched[key], ctxs[c])
                base[c] = y
    losses: dict[int, list] = {i: [] for i in blocks}
    for c, b in enumerate(chunks):
        base_nll, ok = next_token_nll(native.logits(base[c]), b)
        for i in blocks:
            xs = stitched.pop((i, c), None)
            nll = base_nll.clone() if xs is None else next_token_nll(native.logits(xs), b)[0]
            losses[i].append((base_nll, nll, ok))
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
