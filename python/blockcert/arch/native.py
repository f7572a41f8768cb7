"""The native Hugging Face model, driven one residual block at a time.

The model's own forward is started once to let it build embeddings, masks and rotary tables exactly as
it always does; the arguments it hands to block 0 are captured and reused for every block. Running the
blocks ourselves is what lets a stitched model swap any block for its surrogate, and lets the caller
stream: no second copy of any weights is ever made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    """What the model passes to every block besides the residual stream (mask, rotary tables, ...)."""

    args: tuple
    kwargs: dict


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

    def extract_ir(self, i: int) -> BlockIR:
        """Exact-copy surrogate of block i, as the family's adapter declares it."""
        return self.adapter.extract_ir(self, i)

    @torch.no_grad()
    def embed(self, batch: Batch) -> tuple[torch.Tensor, BlockArgs]:
        seen: dict = {}

        def hook(_mod, args, kwargs):
            seen["args"], seen["kwargs"] = args, kwargs
            raise _Captured

        h = self.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            self.lm.model(
                input_ids=batch.ids.to(self.device),
                attention_mask=batch.valid.to(self.device, torch.long),
                use_cache=False,
            )
        except _Captured:
            pass
        finally:
            h.remove()
        args, kwargs = seen["args"], dict(seen["kwargs"])
        x = args[0] if args else kwargs.pop("hidden_states")
        return x, BlockArgs(tuple(args[1:]), kwargs)

    @torch.no_grad()
    def block(self, i: int, x: torch.Tensor, ctx: BlockArgs) -> torch.Tensor:
        out = self.layers[i](x, *ctx.args, **ctx.kwargs)
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

    def attention_mask_bool(self, ctx: BlockArgs, batch: Batch) -> torch.Tensor:
        """The mask the model really hands its blocks, as [P, T, T] booleans (True = may attend)."""
        m = self.adapter.mask_from_args(ctx.args, ctx.kwargs)
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
