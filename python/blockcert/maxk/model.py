"""The Max-of-K model: one attention-only transformer layer, one head, no layer norm, no biases.

Plain torch, written to be read next to the proofs. A sequence of K tokens goes in; the prediction is
the unembedded residual stream at the last position:

    x_i      = W_E[t_i] + W_pos[i]                                   (residual stream, d_model)
    s_j      = (x_{K-1} W_Q) · (x_j W_K) / sqrt(d_head),  j ≤ K-1    (causal: the last query sees all)
    a        = softmax(s)
    logits   = (x_{K-1} + Σ_j a_j x_j W_V W_O) W_U

Only the last position is trained and evaluated, so the other query positions are never computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

PARAM_NAMES = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")


@dataclass(frozen=True)
class ModelShape:
    d_vocab: int = 64
    n_ctx: int = 4
    d_model: int = 32
    d_head: int = 32


class MaxKModel(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        d, v, k, h = shape.d_model, shape.d_vocab, shape.n_ctx, shape.d_head
        self.W_E = nn.Parameter(torch.empty(v, d))
        self.W_pos = nn.Parameter(torch.empty(k, d))
        self.W_Q = nn.Parameter(torch.empty(d, h))
        self.W_K = nn.Parameter(torch.empty(d, h))
        self.W_V = nn.Parameter(torch.empty(d, h))
        self.W_O = nn.Parameter(torch.empty(h, d))
        self.W_U = nn.Parameter(torch.empty(d, v))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Normal initialisation with std 1/sqrt(fan-in), drawn in a fixed order from `generator`."""
        with torch.no_grad():
            for name in PARAM_NAMES:
                p = getattr(self, name)
                fan_in = self.shape.d_model if name in ("W_E", "W_pos") else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, K) int64 → logits at the last position (batch, d_vocab)."""
        x = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        xq = x[:, -1]
        q = xq @ self.W_Q
        keys = x @ self.W_K
        scores = torch.einsum("bh,bkh->bk", q, keys) / math.sqrt(self.shape.d_head)
        attn = scores.softmax(dim=-1)
        z = torch.einsum("bk,bkh->bh", attn, x @ self.W_V)
        return (xq + z @ self.W_O) @ self.W_U

    def state(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n).detach().clone().contiguous() for n in PARAM_NAMES}


def model_from_state(state: dict[str, torch.Tensor]) -> MaxKModel:
    v, d = state["W_E"].shape
    shape = ModelShape(d_vocab=v, n_ctx=state["W_pos"].shape[0], d_model=d, d_head=state["W_Q"].shape[1])
    m = MaxKModel(shape)
    with torch.no_grad():
        for n in PARAM_NAMES:
            getattr(m, n).copy_(state[n])
    return m


def check_state(state: dict[str, torch.Tensor]) -> ModelShape:
    """The shapes a Max-of-K state must have; raises ValueError naming the first mismatch."""
    missing = [n for n in PARAM_NAMES if n not in state]
    extra = sorted(set(state) - set(PARAM_NAMES))
    if missing or extra:
        raise ValueError(f"weights must hold exactly {', '.join(PARAM_NAMES)} (missing {missing}, extra {extra})")
    if state["W_E"].ndim != 2 or state["W_pos"].ndim != 2 or state["W_Q"].ndim != 2:
        raise ValueError("W_E, W_pos and W_Q must be matrices")
    v, d = state["W_E"].shape
    k, h = state["W_pos"].shape[0], state["W_Q"].shape[1]
    want = {"W_E": (v, d), "W_pos": (k, d), "W_Q": (d, h), "W_K": (d, h), "W_V": (d, h), "W_O": (h, d),
            "W_U": (d, v)}
    for n, shp in want.items():
        t = state[n]
        if tuple(t.shape) != shp:
            raise ValueError(f"{n} has shape {tuple(t.shape)}, expected {shp}")
        if t.dtype != torch.float32:
            raise ValueError(f"{n} has dtype {t.dtype}, expected float32")
        if not torch.isfinite(t).all():
            raise ValueError(f"{n} holds NaN or Inf")
    if v < 2 or k < 1:
        raise ValueError(f"d_vocab {v} and n_ctx {k} are too small")
    return ModelShape(d_vocab=v, n_ctx=k, d_model=d, d_head=h)
