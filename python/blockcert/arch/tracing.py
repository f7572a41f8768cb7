"""Tracing the native model: every requested block's inputs, outputs and decisions, and the losses.

Cost: one native forward per chunk of prompts, plus, for loss coverage, the stitched suffix of each block
(blocks i+1..L-1 run on the surrogate's output). The suffix is skipped for a chunk whose surrogate output
is bit-identical to the native output on every token: the suffix is then the native suffix on the same
input, so its losses are the base losses exactly (this is the floor of an exact-copy extraction: one
forward, no suffix at all).

Memory: `irs` may be a function of the block index, called once when the pass reaches that layer, so the
caller can derive a block's surrogate when it is needed and drop it (or write it out) right after: the pass
then holds one surrogate at a time. The next-token losses (head and float64 log-softmax) are computed a
prompt at a time, so no chunk × vocabulary tensor is ever held (base and stitched losses alike, so an
unchanged stream gives the same numbers); the surrogate runs on the whole chunk, the native layer's own
shapes, after the native layer (never beside its activations).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Mapping

import torch

from blockcert.arch.native import NativeModel, next_token_nll
from blockcert.core.batch import Batch
from blockcert.core.interpreter import run_block_with_decisions
from blockcert.core.ir import BlockIR
from blockcert.core.replay import Measured, measure
from blockcert.core.traces import BlockTrace, LossTrace
from blockcert.present.progress import track


def _libc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_TRIM = _libc_trim()


def release_freed_memory() -> None:
    """Hand the C heap's freed pages back to the system (glibc's malloc_trim; a no-op elsewhere).

    A pass allocates and frees many tensors of tens of MB (a chunk's activations, a prompt's logits); the
    allocator keeps freed heap pages that later allocations fragment, and the process's resident memory
    creeps up by hundreds of MB over a pass. Trimming at phase boundaries keeps it at what is live."""
    if _TRIM is not None:
        _TRIM(0)


@torch.no_grad()
def record_traces(native: NativeModel, batch: Batch, blocks: list[int],
                  irs: Mapping[int, BlockIR] | Callable[[int], BlockIR], batch_size: int,
                  measured: dict[int, Measured] | None = None):
    """Block traces, native decisions, base and stitched losses, visiting each layer once.

    `irs` maps each block to its surrogate, or is a function giving it (called once, at that layer).

    The loop is layer-outer: at layer j the native stream of every chunk and every live stitched stream
    (block i < j's surrogate output, continuing through the native suffix) advance together, so a
    streaming model (arch/streaming.py) holds one layer's weights at a time and reads each layer once.
    Every block call sees exactly the chunk it would see in a chunk-by-chunk pass, so the numbers are
    the same.

    The surrogate of each block runs once per chunk, on the native input, to decide whether its suffix is
    needed; with `measured` (a dict) that run's measurements against the native output are kept there
    (`core.replay.measure`, per block), so certifying needs no second replay: they are the numbers a replay
    on the same chunks gives.
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
        inputs = []  # block j's input per chunk, for its surrogate once the native layer is done
        with native.materialized(j):
            for c in range(len(chunks)):
                x = base[c]
                if j in keep:
                    argmax: dict[int, torch.Tensor] = {}
                    hook = native.attention(j).register_forward_hook(_keep_argmax(argmax, j))
                    try:
                        y = native.block(j, x, ctxs[c])
                    finally:
                        hook.remove()
                    cols[j].append((x.cpu(), y.cpu(), masks[j][c], argmax[j]))
                    inputs.append(x)
                else:
                    y = native.block(j, x, ctxs[c])
                for key in [k for k in stitched if k[1] == c and k[0] < j]:
                    stitched[key] = native.block(j, stitched[key], ctxs[c])
                base[c] = y
        if j in keep:
            # The surrogate runs after the native layer, so its tensors and the layer's activations are
            # never in memory together; `irs(j)` may drop (or write out) the IR once this returns.
            ir = irs(j) if callable(irs) else irs[j]
            parts = []
            for c, (x, b) in enumerate(zip(inputs, chunks, strict=True)):
                x_hat, dec = _surrogate(ir, x, b)
                if measured is not None:
                    _x, y, mask, am = cols[j][c]
                    parts.append(measure(ir, x_hat, dec, y, mask, am))
                # Bit-identical output: the suffix would be the native suffix on the same input, so its
                # losses are the base losses exactly; no stitched stream is needed.
                if not torch.equal(x_hat, base[c]):
                    stitched[(j, c)] = x_hat
            if measured is not None:
                measured[j] = Measured(*(torch.cat(f) for f in zip(*((m.errors, m.out_norms, m.path_ok)
                                                                      for m in parts), strict=True)))
            ir = inputs = parts = None
        release_freed_memory()
    losses: dict[int, list] = {i: [] for i in blocks}
    for c, b in enumerate(chunks):
        base_nll, ok = _nll(native, base[c], b)
        for i in blocks:
            xs = stitched.pop((i, c), None)
            nll = base_nll.clone() if xs is None else _nll(native, xs, b)[0]
            losses[i].append((base_nll, nll, ok))
            release_freed_memory()
    traces = {}
    for i in blocks:
        x_in, x_out, mask, am = (torch.cat(c) for c in zip(*cols[i], strict=True))
        traces[i] = BlockTrace(x_in, x_out, batch.valid.clone(), batch.positions, mask, am)
    loss = {i: LossTrace(*(torch.cat(c) for c in zip(*losses[i], strict=True))) for i in blocks}
    return traces, loss


def _nll(native: NativeModel, x: torch.Tensor, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """next_token_nll of the chunk, one prompt at a time: the same numbers (the head and the log-softmax are
    per token), without the chunk's logits, their float64 copy and its log-softmax in memory at once."""
    rows = [next_token_nll(native.logits(x[r:r + 1]), b.rows(r, r + 1)) for r in range(x.shape[0])]
    return torch.cat([n for n, _ in rows]), torch.cat([ok for _, ok in rows])


def _keep_argmax(store: dict, i: int):
    """Forward hook: keep the native attention's most-attended key per head (eager returns the probabilities)."""

    def hook(_module, _args, out):
        store[i] = out[1].argmax(dim=-1).cpu()

    return hook


def _surrogate(ir, x: torch.Tensor, b: Batch):
    """The surrogate's output and decisions on the whole chunk, in one call: the native layer's own shapes,
    so an exact copy is bit-identical to it (a prompt at a time it need not be: matrix-product kernels, and
    their order of summation, can depend on the number of rows)."""
    return run_block_with_decisions(ir, x, b.valid.to(x.device), b.positions.to(x.device))
