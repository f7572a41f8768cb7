"""The closing lines of `blockcert demo`: the stitched model, the bound, the verifier, where the files are."""

from __future__ import annotations

from pathlib import Path


def _g(x, fmt: str = ".3g") -> str:
    return "n/a" if x is None else format(x, fmt)


def _big(decimal: str) -> str:
    """A claimed bound (an exact decimal, possibly hundreds of digits) in a few significant digits."""
    digits = decimal.split(".")[0].lstrip("0")
    return decimal if len(digits) <= 12 else f"{digits[0]}.{digits[1:4]}e+{len(digits) - 1}"


def demo_lines(r, out: Path, total_seconds: float) -> list[str]:
    """`r` is a workflows.demo.DemoResult (duck-typed: presentation sits below the workflows)."""
    m = r.evaluation.metrics
    sizes = [c.size for c in r.certificates.values() if c.size is not None]
    own = sum(s.surrogate_bytes for s in sizes)
    native = sum(s.native_bytes for s in sizes)
    lines = [
        f"surrogates: {own / 2**20:.2f} MiB of weights vs {native / 2**20:.2f} MiB native "
        f"({own / native if native else 1.0:.3f}×) over the {len(sizes)} extracted blocks; "
        f"{sum(c.certified for c in r.certificates.values())}/{len(r.certificates)} certified",
        f"stitched (the other blocks native): PPL {_g(m.baseline_ppl, '.6g')} → {_g(m.stitched_ppl, '.6g')}, "
        f"|ΔPPL|/PPL = {_g(m.relative_delta_ppl)}, next-token agreement {m.next_token_agreement:.4f}",
    ]
    if r.bound is None:
        lines.append(f"global bound: not computed (`blockcert bound {out} --model smollm2-135m`)")
    measured = r.bound.measured_deviation if r.bound is not None else None
    for kb in (r.bound.bounds if r.bound is not None else ()):
        if kb.sound:
            ratio = _g(kb.ratio) if kb.ratio is not None else f"10^{kb.log10_ratio:.0f}" if kb.log10_ratio else "n/a"
            lines.append(f"global bound, {kb.kind}: {_big(kb.claimed_bound)} vs measured deviation {measured:.4g} "
                         f"(ratio {ratio}; {kb.description})")
    lines.append(f"Lean module: {r.lean_module}")
    lines.append(f"report: {r.report}")
    n_cert = sum(c.certified for c in r.certificates.values())
    lines.append(f"{n_cert}/{len(r.certificates)} blocks certified; verifier: {'OK' if r.verified else 'FAILED'}; "
                 f"run directory {out}")
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items())
    lines.append(f"time: {total_seconds:.1f} s ({secs})")
    return lines
