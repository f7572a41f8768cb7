"""Trace datasets D_ℓ (paper eq. 2): recorded block inputs/outputs, masks, positions, decisions, losses."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .errors import BlockCertError
from .files import atomic_save_safetensors


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise BlockCertError(f"missing file {path}")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise BlockCertError(f"{path} is not a readable safetensors file ({e})") from None


@dataclass(frozen=True)
class BlockTrace:
    x_in: torch.Tensor  # [P, T, d] residual stream entering the block
    x_out: torch.Tensor  # [P, T, d] residual stream leaving it (native)
    valid: torch.Tensor  # [P, T] bool, real (non-padding) tokens
    positions: torch.Tensor  # [P, T] int64
    native_mask: torch.Tensor  # [P, T, T] bool, the mask the native block received
    native_argmax: torch.Tensor  # [P, H, T] int64, native most-attended key per head

    def save(self, path: Path) -> None:
        atomic_save_safetensors(path, {f.name: getattr(self, f.name).cpu() for f in fields(self)})

    @staticmethod
    def load(path: Path) -> BlockTrace:
        d = _load(path)
        try:
            return BlockTrace(**{f.name: d[f.name] for f in fields(BlockTrace)})
        except KeyError as e:
            raise BlockCertError(f"{path} lacks tensor {e.args[0]!r}") from None


@dataclass(frozen=True)
class LossTrace:
    base_nll: torch.Tensor  # [P, T-1] float64, native next-token NLL
    stitched_nll: torch.Tensor  # [P, T-1] float64, NLL with only this block replaced
    loss_ok: torch.Tensor  # [P, T-1] bool, where a next token exists

    def save(self, path: Path) -> None:
        atomic_save_safetensors(path, {f.name: getattr(self, f.name).cpu() for f in fields(self)})

    @staticmethod
    def load(path: Path) -> LossTrace:
        d = _load(path)
        try:
            return LossTrace(**{f.name: d[f.name] for f in fields(LossTrace)})
        except KeyError as e:
            raise BlockCertError(f"{path} lacks tensor {e.args[0]!r}") from None
