"""Replay a surrogate on recorded traces: the measurement shared by extraction and verification."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockcert.core.interpreter import run_block_with_decisions
from blockcert.core.ir import BlockIR
from blockcert.core.metrics import path_matches, row_norms, token_errors
from blockcert.core.traces import BlockTrace

CHUNK = 16  # prompts replayed at once: bounds memory on large prompt sets


@dataclass(frozen=True)
class Replay:
    x_hat: torch.Tensor  # [P, T, d]
    errors: torch.Tensor  # [P, T] float64, e(p, t)
    out_norms: torch.Tensor  # [P, T] float64, ||x_t||
    path_ok: torch.Tensor  # [P, T] bool


def native_argmax_of_kept(ir: BlockIR, native_argmax: torch.Tensor) -> torch.Tensor:
    """The native decisions of the heads the surrogate keeps: a pruned surrogate is compared on those.

    Path coverage asks whether the surrogate's discrete choices match the native ones; a removed head
    makes no choice, and its absence is already measured by the activation error.
    """
    heads = ir.spec.attention.heads
    return native_argmax if heads is None else native_argmax[:, list(heads.kept)]


@torch.no_grad()
def replay(ir: BlockIR, trace: BlockTrace, device: torch.device | str = "cpu") -> Replay:
    parts = []
    native_am = trace.native_argmax
    for lo in range(0, trace.x_in.shape[0], CHUNK):
        s = slice(lo, lo + CHUNK)
        x_hat, dec = run_block_with_decisions(
            ir, trace.x_in[s].to(device), trace.valid[s].to(device), trace.positions[s].to(device)
        )
        parts.append(
            (
                x_hat.cpu(),
                token_errors(x_hat, trace.x_out[s].to(device)),
                row_norms(trace.x_out[s]),
                path_matches(dec.mask, dec.argmax, trace.native_mask[s], native_argmax_of_kept(ir, native_am[s])),
            )
        )
    return Replay(*(torch.cat(cols) for cols in zip(*parts, strict=True)))
