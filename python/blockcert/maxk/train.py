"""Deterministic CPU training on uniformly random sequences, label = max, loss at the last position."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from blockcert.maxk.model import MaxKModel, ModelShape


@dataclass(frozen=True)
class TrainConfig:
    d_vocab: int = 64
    k: int = 4
    d_model: int = 32
    d_head: int = 32
    steps: int = 3000
    batch: int = 128
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.01
    n_test: int = 1024

    @property
    def shape(self) -> ModelShape:
        return ModelShape(d_vocab=self.d_vocab, n_ctx=self.k, d_model=self.d_model, d_head=self.d_head)


@dataclass(frozen=True)
class TrainResult:
    state: dict[str, torch.Tensor]
    final_loss: float
    test_accuracy: float
    test_correct: int
    n_test: int


def _stream_seed(seed: int, stream: str) -> int:
    return int.from_bytes(hashlib.sha256(f"maxk:{seed}:{stream}".encode()).digest()[:8], "little") >> 1


def train(cfg: TrainConfig, seed: int) -> TrainResult:
    """Same (cfg, seed) → same weight bytes: one thread, seeded generators for init, data and test set."""
    if cfg.d_vocab < 2 or cfg.k < 1 or cfg.steps < 0 or cfg.batch < 1 or cfg.n_test < 1:
        raise ValueError(f"bad training configuration {cfg}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = MaxKModel(cfg.shape)
        model.reset_parameters(torch.Generator().manual_seed(_stream_seed(seed, "init")))
        data = torch.Generator().manual_seed(_stream_seed(seed, "data"))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                weight_decay=cfg.weight_decay)
        loss = torch.tensor(float("nan"))
        for _ in range(cfg.steps):
            x = torch.randint(0, cfg.d_vocab, (cfg.batch, cfg.k), generator=data)
            loss = torch.nn.functional.cross_entropy(model(x), x.max(dim=1).values)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        test = torch.Generator().manual_seed(_stream_seed(seed, "test"))
        xt = torch.randint(0, cfg.d_vocab, (cfg.n_test, cfg.k), generator=test)
        with torch.no_grad():
            correct = int((model(xt).argmax(dim=-1) == xt.max(dim=1).values).sum())
        return TrainResult(model.state(), float(loss.detach()), correct / cfg.n_test, correct, cfg.n_test)
    finally:
        torch.set_num_threads(threads)
