"""`blockcert ablate`: the ablations of paper Table 3, each certified under the run's policy.

Each ablation (surrogates/ablations.py) of each chosen block is derived from the run's own surrogate of
the block, replayed on the block's certified traces, its stitched losses recomputed with the native
model, and certified exactly as extraction certifies a block. Every ablation is written as a complete run
of its own, `RUN/ablations/NAME/` (ir.json states the ablation: no RoPE, the inverted mask pattern, W_V
zero, the noisy W_Q tensor), so `blockcert verify RUN/ablations/NAME` replays exactly what was measured.
The previous ablations are removed first, and every file written is listed in the run's manifest, so
`blockcert verify RUN` still accounts for every file of the run.
`ablations.json` and `ablations.md` hold the table: per ablation the means over the blocks of cov_act, ε,
MAE and cov_loss, the blocks certified, and the ratio of mean ε to the unablated row (the run itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from blockcert.core.schema import Frozen
from blockcert.errors import BlockCertError
from blockcert.present.markdown import markdown_table
from blockcert.present.progress import track
from blockcert.records.certificate import BlockCertificate
from blockcert.store import layout
from blockcert.store.files import atomic_write_bytes, ensure_writable_dir, json_bytes
from blockcert.store.manifest import record_outputs
from blockcert.store.run_files import save_files
from blockcert.store.run_reader import load_run_summary, select_blocks
from blockcert.surrogates import ABLATIONS, ablate
from blockcert.workflows.compress import ABLATIONS_DIR, open_run, remove_ablations
from blockcert.workflows.extract import summary_of


@dataclass(frozen=True)
class AblateOptions:
    run_dir: Path
    blocks: str
    sigma: float = 0.1
    seed: int = 0
    model: str | None = None
    device: str | None = None


class AblationRow(Frozen):
    name: str  # "none" for the run's own surrogates
    args: str
    n_blocks: int
    certified_blocks: int
    mean_cov_act: float
    mean_epsilon: float | None
    mean_mae: float | None
    mean_cov_loss: float
    error_ratio: float | None  # mean ε / the unablated mean ε; None when that is 0 or an ε is not finite
    run: str | None  # the ablation's own run directory, relative to the run


class AblationReport(Frozen):
    blocks: tuple[int, ...]
    sigma: float
    seed: int
    rows: tuple[AblationRow, ...]


def _mean(xs: list[float | None]) -> float | None:
    return None if any(x is None for x in xs) else math.fsum(xs) / len(xs)


def _row(name: str, args: str, certs: list[BlockCertificate], base_eps: float | None, run: str | None):
    eps = _mean([c.metrics.epsilon for c in certs])
    ratio = eps / base_eps if eps is not None and base_eps else None
    return AblationRow(
        name=name, args=args, n_blocks=len(certs), certified_blocks=sum(c.certified for c in certs),
        mean_cov_act=math.fsum(c.metrics.cov_act for c in certs) / len(certs), mean_epsilon=eps,
        mean_mae=_mean([c.metrics.mae for c in certs]),
        mean_cov_loss=math.fsum(c.metrics.cov_loss for c in certs) / len(certs), error_ratio=ratio, run=run,
    )


def check_options(opts: AblateOptions) -> None:
    if not (math.isfinite(opts.sigma) and opts.sigma >= 0):
        raise BlockCertError(f"--sigma {opts.sigma:g} must be a finite number ≥ 0 (relative to rms(W_Q))")
    if opts.seed < 0:
        raise BlockCertError(f"--seed {opts.seed} must be a whole number ≥ 0")


def run_ablate(opts: AblateOptions) -> tuple[AblationReport, str]:
    check_options(opts)
    summary = load_run_summary(opts.run_dir)
    blocks = select_blocks(summary, opts.blocks)
    out = opts.run_dir / ABLATIONS_DIR
    ensure_writable_dir(out)
    rc = open_run(opts.run_dir, opts.model, opts.device)
    benches = [rc.bench(i, 0.0) for i in blocks]
    remove_ablations(opts.run_dir)  # a previous ablation of other blocks must not linger beside this one
    ensure_writable_dir(out)
    written = [rel for rel in summary.files if rel.startswith(f"{ABLATIONS_DIR}/")]  # leave the manifest if gone
    base = [b.cert for b in benches]
    base_row = _row("none", "", base, _mean([c.metrics.epsilon for c in base]), None)
    rows = [base_row]
    for name in track(list(ABLATIONS), "ablations", total=len(ABLATIONS)):
        files = {layout.PROMPTS: rc.prompts_bytes}
        certs = []
        for b in benches:
            cert, block_files = b.certify(ablate(b.current, name, opts.sigma, opts.seed))
            certs.append(cert)
            files.update(block_files)
        s = summary_of(summary.model, summary.prompts, summary.thresholds, summary.policy, certs, files)
        files[layout.SUMMARY] = json_bytes(s.model_dump(mode="json"))
        save_files(files, out / name)
        written += [f"{ABLATIONS_DIR}/{name}/{rel}" for rel in files]
        args = f"sigma={opts.sigma:g},seed={opts.seed}" if name == "noise-wq" else ""
        rows.append(_row(name, args, certs, base_row.mean_epsilon, f"{ABLATIONS_DIR}/{name}"))
    report = AblationReport(blocks=tuple(blocks), sigma=opts.sigma, seed=opts.seed, rows=tuple(rows))
    md = ablation_markdown(report)
    atomic_write_bytes(out / "ablations.md", md.encode("utf-8"))
    atomic_write_bytes(out / "ablations.json", json_bytes(report.model_dump(mode="json")))
    record_outputs(opts.run_dir, sorted({*written, f"{ABLATIONS_DIR}/ablations.md", f"{ABLATIONS_DIR}/ablations.json"}))
    return report, md


def _g(x: float | None, fmt: str = ".4g") -> str:
    return "n/a" if x is None else format(x, fmt)


def ablation_markdown(r: AblationReport) -> str:
    rows = [
        (row.name + (f" ({row.args})" if row.args else ""), f"{row.mean_cov_act:.4f}", _g(row.mean_epsilon),
         _g(row.mean_mae), f"{row.mean_cov_loss:.4f}", _g(row.error_ratio, ".3g"),
         f"{row.certified_blocks}/{row.n_blocks}")
        for row in r.rows
    ]
    head = ("ablation", "mean cov_act", "mean ε", "mean MAE", "mean cov_loss", "ε ratio to none", "certified")
    return f"Blocks {', '.join(map(str, r.blocks))}\n\n" + markdown_table(head, rows) + "\n"

