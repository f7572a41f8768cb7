"""The plots of `blockcert report`, each a pure function from numbers to PNG bytes (the caller writes them).

Errors span many decades (an exact surrogate has ε = 0, a bf16 one 1e-3…1e1, a global bound 1e400), so
every error axis is log10 of the value, computed here, never matplotlib's log scale: a value beyond the
float range or a zero must still plot (zeros are drawn at the floor and said so in the legend).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display: the report is built headless (CI, a server)

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib import colormaps, colors  # noqa: E402

from blockcert.present.bounds import _LABEL as BOUND_LABELS  # noqa: E402  (one name per kind, as bound.md)

_DPI = 110
HEAT_MAP = "magma_r"  # light = small error, dark = large: a struggling token stands out on white


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def log10_or_none(x: float | None) -> float | None:
    return math.log10(x) if x is not None and x > 0 and math.isfinite(x) else None


@dataclass(frozen=True)
class BlockBar:
    index: int
    epsilon: float | None
    mae: float | None
    cov_act: float
    cov_path: float
    cov_loss: float


def block_bars(rows: Sequence[BlockBar], tau_act: float, alpha_act: float, alpha_loss: float) -> bytes:
    """Per block: log10 ε and log10 MAE against τ_act (top), the three coverages against α (bottom)."""
    xs = list(range(len(rows)))
    labels = [str(r.index) for r in rows]
    width = max(7.0, 0.32 * len(rows) + 3)
    fig, (top, bot) = plt.subplots(2, 1, figsize=(width, 6.4), dpi=_DPI, sharex=True)
    eps = [log10_or_none(r.epsilon) for r in rows]
    mae = [log10_or_none(r.mae) for r in rows]
    known = [v for v in eps + mae if v is not None] + [math.log10(tau_act)]
    floor = math.floor(min(known)) - 1
    for off, vals, name, colour in ((-0.2, eps, "ε (max per-token error)", "C3"), (0.2, mae, "MAE", "C0")):
        top.bar([x + off for x in xs], [0 if v is None else v - floor for v in vals], bottom=floor, width=0.4,
                color=colour, label=name)
        zero = [x + off for x, v in zip(xs, vals, strict=True) if v is None]
        if zero:  # a zero (or non-finite) error has no logarithm: a marker on the floor says so
            top.plot(zero, [floor] * len(zero), "v", color=colour, markersize=5, clip_on=False)
    top.axhline(math.log10(tau_act), color="black", linestyle="--", linewidth=0.9, label=f"τ_act = {tau_act:g}")
    top.set_ylabel("log10 error")
    top.set_ylim(bottom=floor)
    top.set_title("per-block error (bars at the floor: exactly 0)", fontsize=9)
    top.legend(fontsize=7, loc="upper left")
    top.grid(alpha=0.3, axis="y")
    for off, attr, name, colour in ((-0.27, "cov_act", "cov_act", "C2"), (0, "cov_path", "cov_path", "C4"),
                                    (0.27, "cov_loss", "cov_loss", "C1")):
        bot.bar([x + off for x in xs], [getattr(r, attr) for r in rows], width=0.27, color=colour, label=name)
    bot.axhline(alpha_act, color="C2", linestyle="--", linewidth=0.9, label=f"α_act = {alpha_act:g}")
    bot.axhline(alpha_loss, color="C1", linestyle=":", linewidth=1.1, label=f"α_loss = {alpha_loss:g}")
    bot.set_ylim(0, 1.05)
    bot.set_ylabel("coverage")
    bot.set_xlabel("block")
    bot.set_xticks(xs, labels)
    bot.legend(fontsize=7, loc="lower left", ncol=5)
    bot.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _png(fig)


def size_vs_error(indices: Sequence[int], sizes: Sequence[float], size_label: str,
                  epsilons: Sequence[float | None]) -> bytes:
    """Surrogate size (bars) beside its fidelity (log10 ε, line) per block."""
    xs = list(range(len(indices)))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.32 * len(xs) + 3), 3.6), dpi=_DPI)
    ax.bar(xs, sizes, color="C7", label=size_label)
    ax.set_ylabel(size_label)
    ax.set_xticks(xs, [str(i) for i in indices])
    ax.set_xlabel("block")
    ax2 = ax.twinx()
    ax2.plot([x for x, e in zip(xs, epsilons, strict=True) if log10_or_none(e) is not None],
             [log10_or_none(e) for e in epsilons if log10_or_none(e) is not None], "o-", color="C3", label="log10 ε")
    ax2.set_ylabel("log10 ε")
    fig.legend(fontsize=7, loc="upper right")
    ax.set_title("surrogate size next to its fidelity", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def prompt_epsilon_map(blocks: Sequence[int], eps: Sequence[Sequence[float]], tau_act: float) -> bytes:
    """log10 ε per block (rows) and prompt (columns), from the certified per-prompt metrics."""
    logs = [[log10_or_none(v) for v in row] for row in eps]
    known = [v for row in logs for v in row if v is not None]
    lo = min(known) if known else math.log10(tau_act) - 1
    hi = max(known) if known else math.log10(tau_act)
    grid = [[lo if v is None else v for v in row] for row in logs]
    n_p = len(eps[0]) if eps else 0
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * n_p + 2.5), max(2.6, 0.24 * len(blocks) + 1.4)), dpi=_DPI)
    im = ax.imshow(grid, aspect="auto", cmap=HEAT_MAP, vmin=lo, vmax=max(hi, lo + 1e-9), interpolation="nearest")
    ax.set_yticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
    ax.set_xticks(range(n_p), [str(p) for p in range(n_p)], fontsize=7)
    ax.set_xlabel("prompt")
    ax.set_ylabel("block")
    bar = fig.colorbar(im, ax=ax)
    bar.set_label("log10 ε (max over the prompt's tokens)", fontsize=8)
    if lo <= math.log10(tau_act) <= hi:
        bar.ax.axhline(math.log10(tau_act), color="cyan", linewidth=1.5)
    ax.set_title(f"per-prompt ε (cyan on the scale: τ_act = {tau_act:g})", fontsize=9)
    fig.tight_layout()
    return _png(fig)


@dataclass(frozen=True)
class HeatScale:
    """The token heatmap's colour scale: log10 of the error between `lo` and `hi` (the run's own range)."""

    lo: float
    hi: float

    def colour(self, value: float) -> str:
        if not value > 0 or not math.isfinite(value):
            return "#ffffff" if value == 0 else "#00c0ff"  # exact: white; non-finite: a colour no error has
        t = (math.log10(value) - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 1.0
        return colors.to_hex(colormaps[HEAT_MAP](min(1.0, max(0.0, t))))

    def ink(self, value: float) -> str:
        """Text colour readable on `colour(value)`."""
        r, g, b = colors.to_rgb(self.colour(value))
        return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#ffffff"


def heat_scale(values: Sequence[float], tau_act: float) -> HeatScale:
    logs = [math.log10(v) for v in values if v > 0 and math.isfinite(v)]
    if not logs:
        return HeatScale(math.log10(tau_act) - 1, math.log10(tau_act))
    return HeatScale(min(logs), max(max(logs), min(logs) + 1e-9))


def colour_legend(scale: HeatScale, tau_act: float) -> bytes:
    """The token heatmap's colour bar, with τ_act marked."""
    fig, ax = plt.subplots(figsize=(6.0, 0.9), dpi=_DPI)
    norm = colors.Normalize(vmin=scale.lo, vmax=scale.hi)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=HEAT_MAP), cax=ax, orientation="horizontal")
    bar.set_label("log10 of the per-token error ‖B̂(x)_t − B(x)_t‖₂ (white: exactly 0)", fontsize=8)
    if scale.lo <= math.log10(tau_act) <= scale.hi:
        ax.axvline(math.log10(tau_act), color="cyan", linewidth=2)
        ax.text(math.log10(tau_act), 1.15, f"τ_act = {tau_act:g}", transform=ax.get_xaxis_transform(),
                ha="center", fontsize=7)
    fig.subplots_adjust(left=0.05, right=0.95, bottom=0.55, top=0.75)
    return _png(fig)


@dataclass(frozen=True)
class LayerPoint:
    layer: int
    stitched: bool
    mae: float | None
    max_error: float | None


def deviation_curve(layers: Sequence[LayerPoint], bounds: dict[str, Sequence[float | None]],
                    sound: dict[str, bool]) -> bytes:
    """Measured per-layer deviation of the stitched model (MAE and max) and, when bound.json exists, the
    bound of each kind after the same number of blocks (`bounds`: kind -> log10 bound per layer, None = 0).
    Two panels when some kind ends far above the measurement, so that the close kinds stay readable."""
    xs = [la.layer for la in layers]
    measured_max = [log10_or_none(la.max_error) for la in layers]
    top = max((v for v in measured_max if v is not None), default=0.0)
    close = {k: v for k, v in bounds.items() if v and v[-1] is not None and v[-1] - top <= 4.0}
    panels = [bounds] + ([close] if bounds and close != bounds else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(7.2 * len(panels), 4.4), dpi=_DPI, squeeze=False)
    for ax, shown in zip(axes[0], panels, strict=True):
        for kind, vals in shown.items():
            pts = [(x, v) for x, v in zip(xs, vals, strict=False) if v is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", linestyle="-" if sound.get(kind) else "--",
                        color=f"C{list(BOUND_LABELS).index(kind) % 10}" if kind in BOUND_LABELS else None,
                        label=f"bound: {BOUND_LABELS.get(kind, kind)}")
        for vals, name, style in ((measured_max, "measured max ‖x̂−x‖", "k-"),
                                  ([log10_or_none(la.mae) for la in layers], "measured MAE ‖x̂−x‖", "k:")):
            pts = [(x, v) for x, v in zip(xs, vals, strict=True) if v is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, linewidth=2, label=name)
        marks = [(la.layer, v) for la, v in zip(layers, measured_max, strict=True) if la.stitched and v is not None]
        if marks:
            ax.plot(*zip(*marks, strict=True), "k^", markersize=4, label="a stitched block")
        ax.set_xlabel("layer (deviation after the block)")
        ax.set_ylabel("log10 deviation")
        ax.set_title("all kinds" if shown is bounds and len(panels) > 1 else
                     ("kinds within 10⁴× of the measurement" if len(panels) > 1 else "stitched model"), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
