"""Human-readable views of a run: the block table `blockcert show`, `extract` and `demo` print.

Every number is printed whole: the table fits an 80-column terminal (short headers, a compact box, numbers
in `.3g`), and Rich is told to fold rather than cut a cell, so no number is ever shown as `1.22e-…`.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import StringIO

from rich import box
from rich.console import Console
from rich.table import Table

from blockcert.records.certificate import BlockCertificate
from blockcert.records.compress import CompressReport
from blockcert.records.summary import RunSummary


def num(x: float | None, fmt: str = ".3g") -> str:
    return "n/a" if x is None else format(x, fmt)


def kind_text(c: BlockCertificate | None) -> str:
    return "n/a" if c is None or c.size is None else c.size.kind


def size_text(c: BlockCertificate | None) -> str:
    """Surrogate bytes / native bytes, as the certificate records them (from the IR's tensors)."""
    return "n/a" if c is None or c.size is None else f"{c.size.byte_ratio:.3f}"


def block_table(s: RunSummary, certificates: Mapping[int, BlockCertificate] | None = None) -> Table:
    """The block table; with the certificates, also each surrogate's kind and size ratio (bytes vs native)."""
    if certificates is not None:
        return _sized_table(s, certificates)
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


def _sized_table(s: RunSummary, certs: Mapping[int, BlockCertificate]) -> Table:
    t = Table(
        title=f"{s.model.name} ({s.model.dtype}) on '{s.prompts.name}' ({s.prompts.n_tokens} tokens)",
        caption="size = surrogate bytes / native block bytes (weights); act, path, loss = cov_act, cov_path, "
        f"cov_loss  τ_act={s.thresholds.tau_act:g}  "
        f"τ_loss={s.thresholds.tau_loss:g}  policy: cov_act ≥ {s.policy.alpha_act:g}, "
        f"cov_loss ≥ {s.policy.alpha_loss:g}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,  # one space between columns: the kind and all 9 columns fit 80 without cropping
    )
    t.add_column("block", justify="right", no_wrap=True)
    t.add_column("surrogate", justify="left", overflow="fold", min_width=13, max_width=20)
    for col in ("size", "cert.", "ε max", "MAE", "act", "path", "loss"):
        t.add_column(col, justify="right", no_wrap=True, overflow="fold")
    for b in s.blocks:
        c = certs.get(b.index)
        t.add_row(
            str(b.index), kind_text(c), size_text(c), "yes" if b.certified else "NO", num(b.epsilon), num(b.mae),
            f"{b.cov_act:.4f}", f"{b.cov_path:.4f}", f"{b.cov_loss:.4f}",
        )
    return t


def compress_table(r: CompressReport) -> Table:
    t = Table(title=f"compress --family {r.family} --target-cov-act {r.target_cov_act:g}", box=box.SIMPLE_HEAD,
              pad_edge=False, caption="size = bytes / native bytes; replays (suffixes) = the search's cost")
    t.add_column("block", justify="right", no_wrap=True)
    t.add_column("chosen", justify="left", overflow="fold", min_width=16, max_width=30)
    for col in ("size", "cert.", "cov_act", "ε max", "replays"):
        t.add_column(col, justify="right", no_wrap=True, overflow="fold")
    for b in r.blocks:
        t.add_row(str(b.block_index), b.chosen, f"{b.byte_ratio:.3f}", "yes" if b.certified else "NO",
                  f"{b.cov_act:.4f}", num(b.epsilon), f"{b.replays} ({b.suffix_recomputations})")
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
