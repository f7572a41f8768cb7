"""Human-readable views of bound.json: a Markdown table in the style of the paper's Table 6, and a plot of
bound / measured against the number of stitched blocks."""

from __future__ import annotations

import io
import math
from pathlib import Path

from blockcert.records.bound import SOUND_KINDS, BoundArtifact
from blockcert.store.files import atomic_write_bytes

_LABEL = {
    "global": "global Lipschitz (sound, all inputs)",
    "local": "local Lipschitz (sound, on the traced-to-stitched segments)",
    "metric": "per-layer-metric Lipschitz (sound, on a stated ball around the traces)",
    "pointwise": "trajectory certificate (sound only at this run's traced points)",
    "per_prompt": "trajectory certificate, per prompt (sound only at this run's traced points)",
    "empirical": "empirical Jacobian (lower estimate: a floor for any local bound)",
    "trajectory": "trajectory ratios (measured, no claim)",
}


def sci_log10(lg: float | None) -> str:
    """10^lg in scientific notation, also beyond the float range (lg = log10 of the value)."""
    if lg is None:
        return "0"
    if lg == -math.inf:
        return "0"
    e = math.floor(lg)
    m = 10 ** (lg - e)
    if m >= 9.995:
        m, e = 1.0, e + 1
    return f"{m:.2f}e{e:+d}"


def _g(x: float | None) -> str:
    if x is None:
        return "n/a"
    return sci_log10(math.log10(x)) if x > 0 else "0"


def _near_one(x: float | None) -> str:
    """Constants near 1 compound over many blocks: show enough digits to tell 1.0004 from 1.2."""
    if x is not None and 0.1 <= x < 1000:
        return f"{x:.5g}"
    return _g(x)


class _Absent:
    """A kind `blockcert bound --kinds` left out: shown as a dash."""

    value = None
    parts: dict = {}


def _const(block, kind: str):
    return next((c for c in block.constants if c.kind == kind), _Absent)


def _v(text: str, c) -> str:
    return "—" if c is _Absent else text


def markdown(art: BoundArtifact) -> str:
    rows = []
    for b in art.blocks:
        loc, glo = _const(b, "local"), _const(b, "global")
        met, pw, emp, tr = (_const(b, k) for k in ("metric", "pointwise", "empirical", "trajectory"))
        rows.append([
            str(b.index) + ("" if b.stitched else " (native)"), _g(b.epsilon), _g(b.epsilon_composed),
            _g(max(b.replay_error_per_prompt)), _g(b.radius),
            _v(_g(loc.parts.get("k_attn")), loc), _v(_g(loc.parts.get("k_mlp")), loc), _v(_g(loc.value), loc),
            _v(_g(glo.value), glo), _v(_near_one(met.value), met), _v(_near_one(pw.value), pw),
            _v(_g(emp.value), emp), _v(_near_one(tr.value), tr), _g(b.output_deviation),
        ])
    head = ["block", "ε_i certified", "ε_i composed (sound)", "replay fwd. error", "ρ_i (max)", "K_attn", "K_MLP",
            "L local (sound)", "L global (sound)", "L metric (sound, ball)", "L pointwise (trajectory cert.)",
            "L empirical (lower est.)", "L trajectory", "‖x̂−x‖ after"]
    out = [
        f"Lipschitz bounds for {art.model.name} on '{art.prompts.name}' ({art.prompts.n_prompts} prompts, "
        f"{art.prompts.n_tokens} tokens); distance: {art.distance}",
        "",
        _table(head, rows),
        "",
        f"Kinds computed: {', '.join(art.kinds)}"
        + ("" if len(art.kinds) == len(_LABEL) else " (— in the table: left out by `blockcert bound --kinds`)")
        + ".",
        "",
        f"Surrogate: {art.surrogate}.",
        "",
        f"Instantiated global bound Σ ε_i Π_(j>i) L_j (exact rationals, rounded up), measured deviation "
        f"{_g(art.measured_deviation)}:",
        "",
    ]
    krows = []
    for kb in art.bounds:
        krows.append([_LABEL[kb.kind], "yes" if kb.sound else "no", kb.description, sci_log10(kb.log10_bound),
                      _g(art.measured_deviation), sci_log10(kb.log10_ratio) if kb.log10_ratio is not None else "n/a"])
    out.append(_table(["kind", "sound", "what it covers", "bound", "measured", "bound / measured"], krows))
    out.append("")
    out.append("The trajectory certificates hold only at the traced points of this measured stitched run; they do "
               "not generalise to any other input. The Lipschitz kinds hold on the sets they state.")
    out.append("")
    out.append(f"The formal check uses kind '{art.formal_kind}' (the tightest sound kind with one constant per "
               "block, which is what the formal run carries).")
    return "\n".join(out) + "\n"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot(art: BoundArtifact, path: Path) -> Path:
    """log10(bound / measured) after k stitched blocks, one line per kind; a second panel zooms in on the
    kinds that end within 10⁴× (on a real model the others span hundreds of decades and flatten them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(range(1, len(art.measured_prefix) + 1))
    lines = {}
    for kb in art.bounds:
        # each kind against the deviation in its own distance (metric: d_k; the others: max-token)
        pts = [(k, lb - math.log10(m)) for k, lb, m in zip(ks, kb.prefix_log10_bound, kb.prefix_measured, strict=True)
               if lb is not None and m > 0]
        if pts:
            lines[kb.kind] = pts
    close = {k: v for k, v in lines.items() if max(y for _, y in v) <= 4.0}
    panels = [(lines, "all kinds")] + ([(close, "kinds within 10⁴×")] if close and close != lines else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 4.5), dpi=120, squeeze=False)
    for ax, (shown, title) in zip(axes[0], panels, strict=True):
        for kind, pts in shown.items():
            # one colour per kind in both panels; measured kinds dashed, so a sound kind under them shows
            ax.plot(*zip(*pts, strict=True), marker=".", color=f"C{list(_LABEL).index(kind)}",
                    linestyle="-" if kind in SOUND_KINDS else "--", label=_LABEL[kind])
        ax.axhline(3.0, color="grey", linestyle="--", linewidth=0.8, label="10³× (the frontier's goal)")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel("number of stitched blocks k (deviation after block k−1)")
        ax.set_ylabel("log10(bound / measured)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{art.model.name}: bound vs measured deviation, '{art.prompts.name}' prompts")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
