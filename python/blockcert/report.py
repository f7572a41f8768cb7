"""Human-readable views of a run: the block table `blockcert show` and `demo` print."""

from __future__ import annotations

from rich.table import Table

from .summary import RunSummary


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "n/a" if x is None else format(x, fmt)


def block_table(s: RunSummary) -> Table:
    t = Table(
        title=f"{s.model.name} ({s.model.architecture}, {s.model.dtype}) on prompts '{s.prompts.name}' "
        f"({s.prompts.n_prompts} prompts, {s.prompts.n_tokens} tokens)",
        caption=f"τ_act={s.thresholds.tau_act:g}  τ_loss={s.thresholds.tau_loss:g}  "
        f"policy: cov_act ≥ {s.policy.alpha_act:g}, cov_loss ≥ {s.policy.alpha_loss:g}",
    )
    for col in ("block", "certified", "ε (max)", "MAE", "max ε/‖x‖", "cov_act", "cov_path", "cov_loss"):
        t.add_column(col, justify="right")
    for b in s.blocks:
        t.add_row(
            str(b.index), "yes" if b.certified else "NO", _num(b.epsilon), _num(b.mae),
            _num(b.max_relative_error), f"{b.cov_act:.4f}", f"{b.cov_path:.4f}", f"{b.cov_loss:.4f}",
        )
    return t
