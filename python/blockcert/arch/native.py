"""The native Hugging Face model, driven one residual block at a time.

The model's own forward is started once to let it build embeddings, masks and rotary tables exactly as
it always does; the arguments it hands to block 0 are captured and reused for every block. Running the
blocks ourselves is what lets a stitched model swap any block for its surrogate, and lets the caller
stream: no second copy of any weights is ever made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from blockcert.arch.loading import LoadedModel
from blockcert.core.batch import Batch
from blockcert.core.ir import BlockIR
from blockcert.errors import BlockCertError


def encode(lm: LoadedModel, prompts: tuple[str, ...]) -> Batch:
    tok = lm.tokenizer
    seqs = [list(tok(p)["input_ids"]) for p in prompts]
    for i, s in enumerate(seqs):
        if not s:
            raise BlockCertError(f"prompt {i} tokenises to nothing; remove it")
        if len(s) > lm.max_positions:
            raise BlockCertError(
                f"prompt {i} is {len(s)} tokens long, beyond the model's context of {lm.max_positions}; shorten it"
            )
    t = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(seqs), t), pad, dtype=torch.long)
    valid = torch.zeros((len(seqs), t), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        valid[i, : len(s)] = True
    return Batch(ids, valid)


class _Captured(Exception):
    pass


@dataclass(frozen=True)
class BlockArgs:
    """What the model passes to each block besides the residual stream (mask, rotary tables, ...).

    Per layer: families whose layers differ (sliding-window and full-attention layers, each with its own
    mask and rotary base) hand each layer its own arguments; they are recorded exactly as the model's own
    forward hands them out, never rebuilt by BlockCert.
    """

    layers: tuple[tuple[tuple, dict], ...]

    def of(self, i: int) -> tuple[tuple, dict]:
        return self.layers[i]

    @property
    def args(self) -> tuple:  # layer 0's, for callers that only look at the first block
        return self.layers[0][0]

    @property
    def kwargs(self) -> dict:
        return self.layers[0][1]


# Attributes a model's forward may read off a decoder layer to choose its arguments (Gemma 3's
# `attention_type` picks the sliding or the full mask): a recorder standing in for the layer carries them.
_LAYER_ATTRS = ("attention_type", "layer_idx", "is_sliding", "sliding_window", "layer_type")


class _Recorder(torch.nn.Module):
    """Stands in for decoder layer i during `embed`: records its arguments, passes the stream through."""

    def __init__(self, layer: torch.nn.Module, store: list, last: bool):
        super().__init__()
        for name in _LAYER_ATTRS:
            if name in dir(layer):
                object.__setattr__(self, name, getattr(layer, name))
        self.store, self.last = store, last

    def forward(self, hidden_states, *args, **kwargs):
        self.store.append((hidden_states, args, kwargs))
        if self.last:
            raise _Captured  # the final norm and head are not needed
        return hidden_states


class NativeModel:
    def __init__(self, lm: LoadedModel):
        self.lm = lm
        self.adapter = lm.adapter
        self.layers, self.final_norm = self.adapter.layers(lm.model), self.adapter.final_norm(lm.model)
        self.lm_head = lm.model.lm_head

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def attention(self, i: int) -> torch.nn.Module:
        return self.adapter.attention(self.layers[i])

    def materialized(self, i: int):
        """Block i's weights in memory for the duration of a `with` (a no-op unless the model streams)."""
        return self.lm.weights.layer(i) if self.lm.weights is not None else nullcontext()

    def extract_ir(self, i: int) -> BlockIR:
        """Exact-copy surrogate of block i, as the family's adapter declares it."""
        with self.materialized(i):
            return self.adapter.extract_ir(self, i)

    @torch.no_grad()
    def embed(self, batch: Batch) -> tuple[torch.Tensor, BlockArgs]:
        """Block 0's input and every block's other arguments, from one pass of the model's own forward with
        each decoder layer replaced by a recorder (no layer computes; embeddings run once)."""
        return self.layer_args(input_ids=batch.ids.to(self.device),
                               attention_mask=batch.valid.to(self.device, torch.long), use_cache=False)

    @torch.no_grad()
    def layer_args(self, **forward_kwargs) -> tuple[torch.Tensor, BlockArgs]:
        """Block 0's input and the arguments the model's forward, called with `forward_kwargs`, hands each of
        its decoder layers (masks, rotary tables, a KV cache), every layer standing in for by a recorder.
        Per layer, because a family may give layers different ones (Gemma 3: sliding-window and global)."""
        seen: list = []
        n = len(self.layers)
        originals = [self.layers[i] for i in range(n)]
        for i in range(n):
            self.layers[i] = _Recorder(originals[i], seen, last=i == n - 1)
        try:
            self.lm.model(**forward_kwargs)
        except _Captured:
            pass
        finally:
            for i in range(n):
                self.layers[i] = originals[i]
        if len(seen) != n:
            raise BlockCertError(f"the model's forward called {len(seen)} of its {n} decoder layers; not supported")
        x = seen[0][0]
        return x, BlockArgs(tuple((tuple(a), dict(k)) for _x, a, k in seen))

    @torch.no_grad()
    def block(self, i: int, x: torch.Tensor, ctx: BlockArgs) -> torch.Tensor:
        args, kwargs = ctx.of(i)
        with self.materialized(i):
            out = self.layers[i](x, *args, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.final_norm(x))

    @torch.no_grad()
    def run_from(
        self,
        start: int,
        x: torch.Tensor,
        ctx: BlockArgs,
        replace: Mapping[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        observe: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Blocks start..L-1 from residual `x`; `replace[i]` stands in for block i; returns logits."""
        replace = replace or {}
        for i in range(start, len(self.layers)):
            x = replace[i](x) if i in replace else self.block(i, x, ctx)
            if observe is not None:
                observe(i, x)
        return self.logits(x)

    def attention_mask_bool(self, ctx: BlockArgs, batch: Batch, i: int = 0) -> torch.Tensor:
        """The mask the model really hands block i, as [P, T, T] booleans (True = may attend)."""
        m = self.adapter.mask_from_args(*ctx.of(i))
        p, t = batch.ids.shape
        if m is None:  # eager attention with no mask attends everywhere: record that honestly
            return torch.ones(p, t, t, dtype=torch.bool)
        m = m.to("cpu")
        allowed = m if m.dtype == torch.bool else m == 0
        return allowed.reshape(allowed.shape[0], t, t).expand(p, t, t).contiguous()


def next_token_nll(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL of token t+1 given the prefix up to t, as float64 [P, T-1], and where it is defined."""
    logp = torch.log_softmax(logits[:, :-1].to(torch.float64), dim=-1)
    target = batch.ids[:, 1:].to(logits.device)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    ok = (batch.valid[:, 1:] & batch.valid[:, :-1]).to(logits.device)
    return torch.where(ok, nll, torch.zeros_like(nll)).cpu(), ok.cpu()
