"""What the HTML report shows, as plain frozen data: the report workflow fills it, the template renders it.

Nothing here reads a file or formats HTML; every string is shown as text (the template escapes it), so a
prompt, a token or a verifier line may contain anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

State = Literal["ok", "fail", "missing"]  # missing: only tensor files absent from this copy


@dataclass(frozen=True)
class Image:
    name: str  # file stem suffix: <report>_<name>.png
    title: str
    png: bytes = field(repr=False)
    caption: str = ""


@dataclass(frozen=True)
class StatusRow:
    what: str  # "block 3", "run"
    state: State
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Verification:
    state: Literal["verified", "incomplete", "failed"]
    headline: str
    rows: tuple[StatusRow, ...]


@dataclass(frozen=True)
class BlockRow:
    index: int
    certified: bool
    epsilon: float | None
    mae: float | None
    max_relative_error: float | None
    cov_act: float
    cov_path: float
    cov_loss: float
    reasons: tuple[str, ...]
    state: State
    note: str = ""  # why the numbers come from summary.json instead of the certificate


@dataclass(frozen=True)
class Table:
    title: str
    reading: str  # one line: what the table shows
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    source: str = ""  # the file it was read from
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeatCell:
    value: float
    colour: str
    ink: str
    over: bool  # above τ_act
    title: str


@dataclass(frozen=True)
class HeatRow:
    block: int
    cells: tuple[HeatCell, ...]


@dataclass(frozen=True)
class PromptHeatmap:
    prompt: int
    text: str
    tokens: tuple[str, ...]  # decoded text, or token ids when no tokenizer was given
    rows: tuple[HeatRow, ...]
    reading: str


@dataclass(frozen=True)
class TokenSection:
    tokens_are_ids: bool
    heatmaps: tuple[PromptHeatmap, ...]
    legend: Image | None
    notes: tuple[str, ...]  # blocks left out, and why


@dataclass(frozen=True)
class FullModel:
    certified: bool
    reasons: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]
    curve: Image | None
    bound_table: Table | None
    bound_ratio: Image | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class LeanView:
    module: str  # path of the module, or a note that none was found
    theorem: str
    verdict: bool
    lines: tuple[str, ...]  # the mirror's report (as `blockcert check` prints it)


@dataclass(frozen=True)
class ReportView:
    title: str
    header: tuple[tuple[str, str], ...]
    verification: Verification
    blocks: tuple[BlockRow, ...]
    block_plots: tuple[Image, ...]
    size_table: Table | None
    prompt_texts: tuple[str, ...]
    tokens: TokenSection | None
    full_model: FullModel | None
    studies: tuple[Table, ...]
    lean: LeanView | None
    notes: tuple[str, ...]  # sections that could not be shown, and why
    generator: str

    def images(self) -> list[Image]:
        out = list(self.block_plots)
        if self.tokens and self.tokens.legend:
            out.append(self.tokens.legend)
        if self.full_model:
            out += [i for i in (self.full_model.curve, self.full_model.bound_ratio) if i]
        return out
