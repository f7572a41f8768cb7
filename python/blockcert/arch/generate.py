"""Greedy decoding with one block computed by BlockCert's interpreter from an IR (BlockCert-Edit, §7).

The model is driven block by block, as `native.NativeModel` drives it for stitching: the model's own forward
is started once per step only to let it build that step's mask and rotary tables (and to advance its KV
cache), and every block is then called by us. The edited block is never a hook on the Hugging Face module:
its output comes from `core.interpreter.run_block` on the IR. Its inputs at earlier positions never change
(the model is causal), so they are kept, and at each step the interpreter replays the block on the whole
sequence of its inputs while every native block advances one token with its KV cache: one block's work is
recomputed, never the model's. Prompts are decoded one at a time (no padding, so the positions and the
mask are the plain causal ones the interpreter declares).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockcert.arch.native import BlockArgs, NativeModel
from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR
from blockcert.errors import BlockCertError


@dataclass(frozen=True)
class Completion:
    prompt_ids: tuple[int, ...]  # the exact input ids (chat template applied when the tokenizer has one)
    token_ids: tuple[int, ...]  # the generated ids, the end-of-sequence token included when it came
    text: str  # the generated ids decoded, special tokens skipped


def uses_chat_template(lm) -> bool:
    return bool(getattr(lm.tokenizer, "chat_template", None))


def prompt_ids(lm, text: str) -> list[int]:
    """The ids a chat model sees for a user turn (its chat template, generation prompt added); plain text otherwise."""
    tok = lm.tokenizer
    if uses_chat_template(lm):
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      tokenize=True, return_dict=False)
        ids = ids["input_ids"] if isinstance(ids, dict) else ids
    else:
        ids = tok(text)["input_ids"]
    ids = [int(i) for i in ids]
    if not ids:
        raise BlockCertError(f"prompt {text[:40]!r} tokenises to nothing; remove it")
    return ids


def _eos_ids(lm) -> set[int]:
    eos = getattr(lm.model.generation_config, "eos_token_id", None) or lm.tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])}


def _step_args(native: NativeModel, ids: torch.Tensor, cache) -> tuple[torch.Tensor, BlockArgs]:
    """The embeddings of `ids` and the arguments the model hands each block for this step (mask, rotary, cache)."""
    return native.layer_args(input_ids=ids, cache=cache, use_cache=True)


def _call(layer, x, args, kwargs) -> torch.Tensor:
    out = layer(x, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def greedy(native: NativeModel, ids: list[int], max_new_tokens: int, block: int | None = None,
           ir: BlockIR | None = None) -> Completion:
    """Greedy completion of `ids`; block `block` (if given) computed by the interpreter from `ir`."""
    from transformers import DynamicCache  # the adapter layer is the one that knows Hugging Face

    lm = native.lm
    if len(ids) + max_new_tokens > lm.max_positions:
        raise BlockCertError(f"a prompt of {len(ids)} tokens plus {max_new_tokens} new ones exceeds the model's "
                             f"context of {lm.max_positions}; lower --max-new-tokens")
    cache = DynamicCache(config=lm.config)
    eos, dev = _eos_ids(lm), native.device
    new = torch.tensor([ids], device=dev)
    history: torch.Tensor | None = None  # the edited block's inputs so far [1, T, d]
    out: list[int] = []
    for _ in range(max_new_tokens):
        x, ctx = _step_args(native, new, cache)
        for i, layer in enumerate(native.layers):
            args, kwargs = ctx.of(i)
            if i != block:
                x = _call(layer, x, args, kwargs)
                continue
            history = x if history is None else torch.cat([history, x], dim=1)
            t = history.shape[1]
            valid = torch.ones(1, t, dtype=torch.bool, device=dev)
            positions = torch.arange(t, device=dev)[None]
            y = run_block(ir, history, valid, positions)[:, -x.shape[1]:]
            if i == 0:
                # The model reads the sequence length (positions, mask size) off layer 0's cache: keep it
                # advancing. Its output is discarded; the block's output is the interpreter's.
                _call(layer, x, args, kwargs)
            x = y
        nxt = int(native.logits(x[:, -1:])[0, -1].argmax())
        out.append(nxt)
        if nxt in eos:
            break
        new = torch.tensor([[nxt]], device=dev)
    text = lm.tokenizer.decode(out, skip_special_tokens=True)
    return Completion(tuple(ids), tuple(out), text)


@torch.no_grad()
def native_generate(native: NativeModel, ids: list[int], max_new_tokens: int) -> tuple[int, ...]:
    """Hugging Face's own greedy `generate` with its KV cache: the reference the edit's cost is measured against."""
    lm = native.lm
    out = lm.model.generate(torch.tensor([ids], device=native.device), max_new_tokens=max_new_tokens,
                            do_sample=False, use_cache=True, pad_token_id=lm.tokenizer.eos_token_id)
    return tuple(int(t) for t in out[0, len(ids):])


def block_inputs(native: NativeModel, batch, block: int) -> tuple[torch.Tensor, object]:
    """The native residual stream entering `block` on `batch` (embedding, then blocks 0..block-1)."""
    x, ctx = native.embed(batch)
    for i in range(block):
        x = native.block(i, x, ctx)
    return x, ctx
