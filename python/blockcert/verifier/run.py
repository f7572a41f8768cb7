"""`blockcert verify`: every check of the registry, over one run directory, read-only.

Block certificates are checked one by one (blocks.py); every further certificate type (the full-model
certificate, the formal record, ...) is a `RunCheck` registered in `RUN_CHECKS`, which `verify_run` runs in
order. A check returns one line per problem and never raises for bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from blockcert.errors import BlockCertError
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.files import resolve_inside
from blockcert.store.records_io import load_model_file
from blockcert.verifier.blocks import check_with_model, verify_block
from blockcert.verifier.formal import formal_problems
from blockcert.verifier.fullmodel import verify_full_model
from blockcert.verifier.report import BlockReport, RunReport

RunCheck = Callable[[Path, str | None], list[str]]

# Checked in this order after the block certificates; a new certificate type adds its check here.
RUN_CHECKS: dict[str, RunCheck] = {
    "full-model certificate": verify_full_model,
    "formal record": lambda run_dir, _model: formal_problems(run_dir),
}


def verify_run(run_dir: Path, model: str | None = None) -> RunReport:
    report = RunReport()
    if not run_dir.is_dir():
        raise BlockCertError(f"run directory {run_dir} does not exist")
    try:
        summary = load_model_file(run_dir / layout.SUMMARY, RunSummary, "run summary")
    except BlockCertError as e:
        report.errors.append(f"{e} (an incomplete run: rerun `blockcert extract`)")
        return report
    listed = {e.index for e in summary.blocks}
    for d in sorted(run_dir.glob("block_*")):
        if d.is_dir() and d.name[6:].isdigit() and int(d.name[6:]) not in listed:
            report.errors.append(f"{d.name} is not listed in summary.json (left from another run?)")
    for entry in summary.blocks:
        try:
            cert_path = resolve_inside(run_dir, entry.certificate)
        except BlockCertError as e:
            report.blocks.append(BlockReport(entry.index, [str(e)]))
            continue
        rep = verify_block(run_dir, cert_path, entry.index, entry.digest)
        if rep.ok:
            cert = load_model_file(cert_path, BlockCertificate, "certificate")
            if (entry.certified, entry.cov_act, entry.cov_loss, entry.epsilon) != (
                cert.certified, cert.metrics.cov_act, cert.metrics.cov_loss, cert.metrics.epsilon
            ):
                rep.errors.append("summary.json entry disagrees with the certificate")
        report.blocks.append(rep)
    if summary.all_certified != all(e.certified for e in summary.blocks):
        report.errors.append("summary.json: all_certified disagrees with the block verdicts")
    if model is not None:
        with torch.no_grad():
            check_with_model(run_dir, summary, report, model)
    for check in RUN_CHECKS.values():
        report.errors.extend(check(run_dir, model))
    return report
