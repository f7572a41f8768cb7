"""`blockcert verify`: every check of the registry, over one run directory, read-only.

The manifest (summary.json) comes first: sealed, every file it lists present and intact, every file present
listed. Block certificates are then checked one by one against it (blocks.py); every further certificate
type (the full-model certificate, the bound, the formal record, ...) is a `RunCheck` registered in
`RUN_CHECKS`, which `verify_run` runs in order. A check returns one line per problem and never raises for
bad input; what it re-derived and what it took from the files is recorded in the report's `provenance`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blockcert.errors import BlockCertError
from blockcert.store.manifest import load_manifest
from blockcert.verifier.blocks import check_with_model, verify_block
from blockcert.verifier.bounds import bound_problems
from blockcert.verifier.formal import formal_problems
from blockcert.verifier.fullmodel import verify_full_model
from blockcert.verifier.manifest import manifest_problems
from blockcert.verifier.report import RunReport

MAX_BLOCKS = 10_000  # blocks one run may list (the largest supported models have ~100)


@dataclass(frozen=True)
class VerifyContext:
    """What a run check is given: the options, and the report's provenance lists to add to."""

    model: str | None = None
    deep: bool = False  # also re-derive the pointwise and local constants of bound.json (slow)
    rederived: list[str] = field(default_factory=list)
    from_files: list[str] = field(default_factory=list)


RunCheck = Callable[[Path, VerifyContext], list[str]]

# Checked in this order after the block certificates; a new certificate type adds its check here.
RUN_CHECKS: dict[str, RunCheck] = {
    "full-model certificate": lambda run_dir, ctx: verify_full_model(run_dir, ctx.model),
    "bound": lambda run_dir, ctx: bound_problems(run_dir, ctx.deep, ctx.rederived, ctx.from_files),
    "formal record": lambda run_dir, _ctx: formal_problems(run_dir),
}


def verify_run(run_dir: Path, model: str | None = None, deep: bool = False) -> RunReport:
    report = RunReport()
    ctx = VerifyContext(model, deep, report.rederived, report.from_files)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BlockCertError(f"run directory {run_dir} does not exist")
    try:
        summary = load_manifest(run_dir)
    except BlockCertError as e:
        report.errors.append(f"{e} (an incomplete or foreign run)")
        return report
    if len(summary.blocks) > MAX_BLOCKS:
        report.errors.append(f"summary.json field blocks lists {len(summary.blocks)} blocks, over the limit of "
                             f"{MAX_BLOCKS}")
        return report
    if not summary.blocks:
        report.errors.append("summary.json field blocks is empty: a run with no block certificate certifies nothing")
    indices = [e.index for e in summary.blocks]
    if indices != sorted(set(indices)) or any(not 0 <= i < summary.model.num_layers for i in indices):
        report.errors.append(f"summary.json field blocks: indices {indices[:10]} are not distinct layers "
                             f"0..{summary.model.num_layers - 1} in order")
    report.errors.extend(manifest_problems(run_dir, summary))
    listed = set(indices)
    for d in sorted(run_dir.glob("block_*")):
        if d.is_dir() and d.name[6:].isdigit() and int(d.name[6:]) not in listed:
            report.errors.append(f"{d.name} is not listed in summary.json field blocks (left from another run?)")
    for entry in summary.blocks:
        report.blocks.append(verify_block(run_dir, summary, entry))
    report.rederived.append("block metrics (ε, MAE, coverages, per-prompt rows) from a replay of every surrogate")
    report.from_files.append(f"traces and per-token losses ({report.loss_coverage_source})")
    if summary.all_certified != all(e.certified for e in summary.blocks):
        report.errors.append(f"summary.json field all_certified = {summary.all_certified}, the block verdicts give "
                             f"{all(e.certified for e in summary.blocks)}")
    if model is not None and report.ok:
        with torch.no_grad():
            check_with_model(run_dir, summary, report, model)
        report.rederived.append("traces and per-token losses, from a fresh run of the native model")
        report.from_files.remove(report.from_files[-1])
    for check in RUN_CHECKS.values():
        report.errors.extend(check(run_dir, ctx))
    return report
