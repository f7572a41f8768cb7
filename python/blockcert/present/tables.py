"""Human-readable views of a run: the block table `blockcert show`, `extract` and `demo` print.

Every number is printed whole: the table fits an 80-column terminal (short headers, a compact box, numbers
in `.3g`), and Rich is told to fold rather than cut a cell, so no number is ever shown as `1.22e-…`.
"""

from __future__ import annotations

from io import StringIO

from rich import box
from rich.console import Console
from rich.table import Table

from blockcert.records.summary import RunSummary


def num(x: float | None, fmt: str = ".3g") -> str:
    return "n/a" if x is None else format(x, fmt)


def block_table(s: RunSummary) -> Table:
    t = Table(
        title=f"{s.model.name} ({s.model.architecture}, {s.model.dtype}) on prompts '{s.prompts.name}' "
        f"({s.prompts.n_prompts} prompts, {s.prompts.n_tokens} tokens)",
        caption=f"τ_act={s.thresholds.tau_act:g}  τ_loss={s.thresholds.tau_loss:g}  "
        f"policy: cov_act ≥ {s.policy.alpha_act:g}, cov_loss ≥ {s.policy.alpha_loss:g}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("block", "cert.", "ε max", "MAE", "ε/‖x‖", "cov_act", "cov_path", "cov_loss"):
        t.add_column(col, justify="right", no_wrap=True, overflow="fold")
    for b in s.blocks:
        t.add_row(
            str(b.index), "yes" if b.certified else "NO", num(b.epsilon), num(b.mae),
            num(b.max_relative_error), f"{b.cov_act:.4f}", f"{b.cov_path:.4f}", f"{b.cov_loss:.4f}",
        )
    return t


def render_text(renderable, width: int = 80) -> str:
    out = StringIO()
    Console(file=out, width=width, highlight=False, color_system=None).print(renderable)
    return out.getvalue()


def render_html(renderable) -> str:
    """A Rich renderable as an HTML fragment (escaped text in a <pre>), for notebooks."""
    console = Console(record=True, file=StringIO(), width=100, highlight=False)
    console.print(renderable)
    return console.export_html(inline_styles=True, code_format="<pre style='font-family:monospace'>{code}</pre>")
