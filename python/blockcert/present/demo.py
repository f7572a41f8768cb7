"""The closing lines of `blockcert demo`: the stitched model, the bound, the verifier, where the files are."""

from __future__ import annotations

from pathlib import Path


def _g(x, fmt: str = ".3g") -> str:
    return "n/a" if x is None else format(x, fmt)


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
        lines.append(f"global bound: not computed (`blockcert bound {out}`, every kind for all 30 layers, "
                     "takes about 10 minutes on 2 cores; `blockcert demo --bound` includes it)")
    measured = r.bound.measured_deviation if r.bound is not None else None
    for kb in (r.bound.bounds if r.bound is not None else ()):
        if kb.kind in ("pointwise", "per_prompt"):
            lines.append(f"global bound ({kb.kind}, {'sound' if kb.sound else 'not sound'}): {kb.claimed_bound} "
                         f"vs measured deviation {measured:.4g} (ratio {_g(kb.ratio)})")
    lines.append(f"Lean module: {r.lean_module}")
    lines.append(f"report: {r.report}")
    n_cert = sum(c.certified for c in r.certificates.values())
    lines.append(f"{n_cert}/{len(r.certificates)} blocks certified; verifier: {'OK' if r.verified else 'FAILED'}; "
                 f"run directory {out}")
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items())
    lines.append(f"time: {total_seconds:.1f} s ({secs})")
    return lines
