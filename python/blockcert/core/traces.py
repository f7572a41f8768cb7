"""Trace datasets D_ℓ (paper eq. 2): recorded block inputs/outputs, masks, positions, decisions, losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockTrace:
    x_in: torch.Tensor  # [P, T, d] residual stream entering the block
    x_out: torch.Tensor  # [P, T, d] residual stream leaving it (native)
    valid: torch.Tensor  # [P, T] bool, real (non-padding) tokens
    positions: torch.Tensor  # [P, T] int64
    native_mask: torch.Tensor  # [P, T, T] bool, the mask the native block received
    native_argmax: torch.Tensor  # [P, H, T] int64, native most-attended key per head


@dataclass(frozen=True)
class LossTrace:
    base_nll: torch.Tensor  # [P, T-1] float64, native next-token NLL
    stitched_nll: torch.Tensor  # [P, T-1] float64, NLL with only this block replaced
    loss_ok: torch.Tensor  # [P, T-1] bool, where a next token exists
