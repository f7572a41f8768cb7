"""A batch of right-padded token ids: the one input shape every block sees."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids; `valid` marks real tokens. Positions are 0..T-1 for every row."""

    ids: torch.Tensor  # [P, T] int64
    valid: torch.Tensor  # [P, T] bool

    @property
    def positions(self) -> torch.Tensor:
        p, t = self.ids.shape
        return torch.arange(t, device=self.ids.device).expand(p, t).contiguous()

    def rows(self, lo: int, hi: int) -> Batch:
        return Batch(self.ids[lo:hi], self.valid[lo:hi])


def batch_from_token_ids(token_ids: list[list[int]], pad: int = 0) -> Batch:
    """Rebuild the exact batch a run was traced on from the token ids it recorded."""
    t = max(len(s) for s in token_ids)
    ids = torch.full((len(token_ids), t), pad, dtype=torch.long)
    valid = torch.zeros((len(token_ids), t), dtype=torch.bool)
    for i, s in enumerate(token_ids):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        valid[i, : len(s)] = True
    return Batch(ids, valid)
