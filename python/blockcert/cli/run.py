"""`extract`, `verify`, `show`, `demo`, `schema`: the run-level commands."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import DeviceOpt, DtypeOpt, ModelOpt, app, stdout
from blockcert.cli.app import quiet_hf as _quiet_hf
from blockcert.core.metrics import Policy, Thresholds
from blockcert.errors import BlockCertError
from blockcert.present.tables import block_table
from blockcert.records.certificate import BlockCertificate
from blockcert.records.registry import export_schemas
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.records_io import load_model_file
from blockcert.verifier.run import verify_run
from blockcert.workflows.extract import ExtractOptions, run_extract

DEMO_BLOCKS = "0,5,10,15,20,25,29"


@app.command()
def extract(
    model: ModelOpt = "smollm2-135m",
    prompts: Annotated[str, typer.Option(help="default, stress, a text file (a prompt a line), .jsonl")] = "default",
    blocks: Annotated[str, typer.Option(help="block indices like 0,5,10 or 3-7, or all")] = "all",
    out: Annotated[Path, typer.Option(help="run directory to write")] = Path("runs/extract"),
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = "cpu",
    tau_act: Annotated[float, typer.Option(help="activation-coverage threshold τ_act")] = 1e-2,
    tau_loss: Annotated[float, typer.Option(help="loss-coverage threshold τ_loss")] = 1e-3,
    alpha_act: Annotated[float, typer.Option(help="policy: certified needs cov_act ≥ α_act")] = 0.94,
    alpha_loss: Annotated[float, typer.Option(help="policy: certified needs cov_loss ≥ α_loss")] = 0.9,
    batch_size: Annotated[int, typer.Option(help="prompts per native forward pass")] = 8,
    surrogate: Annotated[str, typer.Option(help="exact (weights copied) or bf16 / fp16 (weights rounded)")] = "exact",
) -> None:
    """Trace the model, extract a surrogate per block, measure it and write certificates."""
    from pydantic import ValidationError


    _quiet_hf()
    try:
        thresholds = Thresholds(tau_act=tau_act, tau_loss=tau_loss)
        policy = Policy(alpha_act=alpha_act, alpha_loss=alpha_loss)
    except ValidationError as e:
        raise BlockCertError(f"bad threshold or policy: {e.errors()[0]['loc'][0]} {e.errors()[0]['msg']}") from None
    if batch_size < 1:
        raise BlockCertError("--batch-size must be at least 1")
    if surrogate not in ("exact", "bf16", "fp16"):
        raise BlockCertError(f"--surrogate {surrogate!r} is not supported; use exact, bf16 or fp16")
    opts = ExtractOptions(model, prompts, blocks, out, dtype, device, thresholds, policy, batch_size, surrogate)
    summary = run_extract(opts)
    stdout.print(block_table(summary))
    stdout.print(f"wrote {out / layout.SUMMARY}")
    _fail_on_nonfinite(out)


def _fail_on_nonfinite(run_dir: Path) -> None:
    """NaN/Inf activations are recorded (never certified), but the command must not look successful."""

    summary = load_model_file(run_dir / layout.SUMMARY, RunSummary, "run summary")
    bad = []
    for b in summary.blocks:
        cert = load_model_file(run_dir / b.certificate, BlockCertificate, "certificate")
        if cert.metrics.nonfinite_tokens:
            bad.append(f"block {b.index} ({cert.metrics.nonfinite_tokens} tokens)")
    if bad:
        raise BlockCertError(
            f"NaN/Inf activations in {', '.join(bad)}; recorded as not certified in {run_dir / layout.SUMMARY}"
        )


@app.command()
def verify(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by extract")],
    model: Annotated[str | None, typer.Option(help="also re-run this model to re-derive traces and losses")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON report on stdout")] = False,
) -> None:
    """Re-derive every hash and metric of a run from its files; exit 0 only if all hold."""

    _quiet_hf()
    report = verify_run(run_dir, model)
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for line in report.lines():
            print(f"FAIL {line}", file=sys.stderr)
        n = len(report.blocks)
        status = "OK" if report.ok else "FAILED"
        stdout.print(f"{status}: {n} block certificate(s) checked; loss coverage from {report.loss_coverage_source}")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def show(run_dir: Annotated[Path, typer.Argument(help="run directory")]) -> None:
    """Print a table of the run's blocks and their metrics."""

    stdout.print(block_table(load_model_file(run_dir / layout.SUMMARY, RunSummary, "run summary")))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="run directory to write")] = Path("runs/demo"),
    dtype: DtypeOpt = "float32",
) -> None:
    """Extract and certify blocks 0,5,10,15,20,25,29 of smollm2-135m on the default prompts, then verify."""

    _quiet_hf()
    t0 = time.perf_counter()
    summary = run_extract(ExtractOptions("smollm2-135m", "default", DEMO_BLOCKS, out, dtype))
    t1 = time.perf_counter()
    report = verify_run(out)
    t2 = time.perf_counter()
    stdout.print(block_table(summary))
    for line in report.lines():
        print(f"FAIL {line}", file=sys.stderr)
    n_cert = sum(b.certified for b in summary.blocks)
    stdout.print(
        f"{n_cert}/{len(summary.blocks)} blocks certified; verifier: {'OK' if report.ok else 'FAILED'}; "
        f"extract {t1 - t0:.1f} s, verify {t2 - t1:.1f} s; run directory {out}"
    )
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def schema(out: Annotated[Path, typer.Option(help="directory for the JSON Schemas")] = Path("docs/schemas")) -> None:
    """Export the JSON Schemas of the certificate formats."""

    for p in export_schemas(out):
        stdout.print(f"wrote {p}")
