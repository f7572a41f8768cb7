"""TODO-DOC"""

from __future__ import annotations

from dataclasses import dataclass

from blockcert.arch.native import NativeModel, encode
from blockcert.arch.stitched import PairedReplay, paired_replay
from blockcert.records.semantic import ProbeItem, SemanticItem


def answer_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id]).strip().lower()


def label_first_token(tokenizer, label: str) -> str:
    for tid in tokenizer(" " + label.strip(), add_special_tokens=False)["input_ids"]:
        text = answer_text(tokenizer, tid)
        if text:
            return text
    return ""


@dataclass(frozen=True)
class ProbeRun:
    items: tuple[SemanticItem, ...]
    replay: PairedReplay
    last: list[int]  # index of each prompt's last token


def run_probe(native: NativeModel, probe_items: tuple[ProbeItem, ...], stitched: set[int], load_ir, batch_size: int):
    """Greedy next token of the baseline and the stitched model after each probe prompt."""
    tok = native.lm.tokenizer
    batch = encode(native.lm, tuple(i.prompt for i in probe_items))
    r = paired_replay(native, batch, stitched, load_ir, batch_size, label="semantic probe")
    last = [int(row.sum()) - 1 for row in batch.valid]
    items = []
    for k, (item, t) in enumerate(zip(probe_items, last, strict=True)):
        b, s = int(r.base_next[k, t]), int(r.stitched_next[k, t])
        items.append(
            SemanticItem(
                index=k,
                category=item.category,
                prompt=item.prompt,
                label=item.label,
                label_token=label_first_token(tok, item.label),
                baseline_token=b,
                baseline_answer=answer_text(tok, b),
                stitched_token=s,
                stitched_answer=answer_text(tok, s),
            )
        )
    return ProbeRun(tuple(items), r, last)
