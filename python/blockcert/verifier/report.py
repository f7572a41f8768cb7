"""What `blockcert verify` found: a report per block and one per run, truthy exactly when valid."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich import box
from rich.table import Table

from blockcert.present.tables import render_html


@dataclass
class BlockReport:
    index: int
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class RunReport:
    blocks: list[BlockReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loss_coverage_source: str = "recorded per-token losses"
    rederived: list[str] = field(default_factory=list)  # numbers verify recomputed and compared
    from_files: list[str] = field(default_factory=list)  # numbers it could only take from the (hashed) files

    @property
    def ok(self) -> bool:
        return not self.errors and all(b.ok for b in self.blocks)

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "loss_coverage_source": self.loss_coverage_source,
            "rederived": self.rederived,
            "taken_from_files": self.from_files,
            "blocks": [{"index": b.index, "ok": b.ok, "errors": b.errors} for b in self.blocks],
        }

    def lines(self) -> list[str]:
        return self.errors + [f"block {b.index}: {e}" for b in self.blocks for e in b.errors]

    @property
    def problems(self) -> list[str]:
        return self.lines()

    def __bool__(self) -> bool:
        return self.ok

    def table(self) -> Table:
        t = Table(title=f"verify: {'OK' if self.ok else 'FAILED'} ({len(self.blocks)} block certificate(s); "
                  f"loss coverage from {self.loss_coverage_source})", box=box.SIMPLE_HEAD)
        t.add_column("block", justify="right")
        t.add_column("status")
        t.add_column("problems", overflow="fold")
        for b in self.blocks:
            t.add_row(str(b.index), "ok" if b.ok else "FAIL", "\n".join(b.errors))
        for e in self.errors:
            t.add_row("run", "FAIL", e)
        return t

    def __rich__(self) -> Table:
        return self.table()

    def _repr_html_(self) -> str:
        return render_html(self.table())
