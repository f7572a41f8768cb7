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


@dataclass(frozen=True)
class Measured:
    """What a certificate needs of a replay: per-token errors, output norms, path agreement ([P, T] each)."""

    errors: torch.Tensor
    out_norms: torch.Tensor
    path_ok: torch.Tensor


def measure(ir: BlockIR, x_hat: torch.Tensor, dec, x_out: torch.Tensor, native_mask: torch.Tensor,
            native_argmax: torch.Tensor) -> Measured:
    """The measurements of the surrogate's output `x_hat` and decisions `dec` against the native block's."""
    return Measured(token_errors(x_hat, x_out.to(x_hat.device)), row_norms(x_out.cpu()),
                    path_matches(dec.mask, dec.argmax, native_mask, native_argmax_of_kept(ir, native_argmax)))


@torch.no_grad()
def replay(ir: BlockIR, trace: BlockTrace, device: torch.device | str = "cpu") -> Replay:
    parts = []
    for lo in range(0, trace.x_in.shape[0], CHUNK):
        s = slice(lo, lo + CHUNK)
        x_hat, dec = run_block_with_decisions(
            ir, trace.x_in[s].to(device), trace.valid[s].to(device), trace.positions[s].to(device)
        )
        m = measure(ir, x_hat, dec, trace.x_out[s], trace.native_mask[s], trace.native_argmax[s])
        parts.append((x_hat.cpu(), m.errors, m.out_norms, m.path_ok))
    return Replay(*(torch.cat(cols) for cols in zip(*parts, strict=True)))
