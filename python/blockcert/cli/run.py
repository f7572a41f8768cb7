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
from blockcert.maxk.store import RECORD as TRAIN_RECORD
from blockcert.maxk.verify import verify_maxk
from blockcert.present.demo import demo_lines
from blockcert.present.tables import block_table
from blockcert.records.certificate import BlockCertificate
from blockcert.records.edit import EDIT_CERTIFICATE
from blockcert.records.registry import export_schemas
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.records_io import load_model_file
from blockcert.store.run_reader import block_certificate, load_run_summary
from blockcert.surrogates import needs_traces
from blockcert.verifier.edit import verify_edit
from blockcert.verifier.run import verify_run
from blockcert.workflows.compress import extract_ranked
from blockcert.workflows.demo import run_demo
from blockcert.workflows.executor import executor_for
from blockcert.workflows.extract import ExtractOptions, check_trace_dtype


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
    surrogate: Annotated[str, typer.Option(help="exact, bf16, fp16, lowrank:R, lowrank:R,mlp, prune-heads:K, "
                                           "prune-neurons:F, int8 (A+B: A then B)")] = "exact",
    streaming: Annotated[bool, typer.Option("--streaming", help="read decoder layers from their safetensors "
                                            "shards one at a time (models larger than memory)")] = False,
    executor: Annotated[str, typer.Option(help="where per-block certification runs: local or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="a Ray cluster's address (default: a local one)")] = None,
    trace_dtype: Annotated[str | None, typer.Option(help="store the traces (block inputs/outputs) as bfloat16, "
                                                    "float16 or float32; ε is measured on the stored values and "
                                                    "the certificate records the rounding (default: the model "
                                                    "dtype)")] = None,
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
    executor_for(executor, ray_address)  # a bad executor fails before the model loads
    check_trace_dtype(trace_dtype)
    if trace_dtype not in (None, dtype) and needs_traces(surrogate):
        raise BlockCertError(f"--surrogate {surrogate} is ranked on the traces and re-measures losses from them; "
                             "it needs them in the model's dtype: drop --trace-dtype")
    opts = ExtractOptions(model, prompts, blocks, out, dtype, device, thresholds, policy, batch_size, surrogate,
                          streaming, executor, ray_address, trace_dtype)
    summary = extract_ranked(opts)
    stdout.print(block_table(summary, {e.index: block_certificate(out, summary, e.index) for e in summary.blocks}))
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
    deep: Annotated[bool, typer.Option("--deep", help="also re-derive bound.json's pointwise and local constants")]
    = False,
) -> None:
    """Re-derive every hash and metric of a run from its files; exit 0 only if all hold.

    Also verifies an edit directory (`blockcert edit`) and a Max-of-K study directory (`blockcert maxk`)."""
    _quiet_hf()
    other = _other_kind(run_dir)
    if other is not None:
        name, problems = other
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        stdout.print(f"{'OK' if not problems else 'FAILED'}: {name} checked")
        raise typer.Exit(1 if problems else 0)
    report = verify_run(run_dir, model, deep=deep)
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for line in report.lines():
            print(f"FAIL {line}", file=sys.stderr)
        for line in report.rederived:
            stdout.print(f"re-derived: {line}")
        for line in report.from_files:
            stdout.print(f"taken from the files: {line}")
        n = len(report.blocks)
        status = "OK" if report.ok else "FAILED"
        stdout.print(f"{status}: {n} block certificate(s) checked; loss coverage from {report.loss_coverage_source}")
    raise typer.Exit(0 if report.ok else 1)


def _other_kind(path: Path) -> tuple[str, list[str]] | None:
    """Directories that are not extraction runs but carry certificates of their own kind."""
    if (path / EDIT_CERTIFICATE).is_file():
        return "edit certificate", verify_edit(path)
    if (path / TRAIN_RECORD).is_file():
        return "Max-of-K study", verify_maxk(path)
    return None


@app.command()
def show(run_dir: Annotated[Path, typer.Argument(help="run directory")]) -> None:
    """Print a table of the run's blocks and their metrics (from the sealed manifest, checked first)."""

    summary = load_run_summary(run_dir)
    # a forged entry must not be printed as if certified
    certs = {e.index: block_certificate(run_dir, summary, e.index) for e in summary.blocks}
    stdout.print(block_table(summary, certs))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="run directory to write")] = Path("runs/demo"),
    dtype: DtypeOpt = "float32",
    bound: Annotated[bool, typer.Option("--bound/--no-bound", help="bound every layer (global, pointwise, "
                                                                  "per-prompt kinds: ≈ 30 s)")] = True,
    all_kinds: Annotated[bool, typer.Option("--all-kinds", help="also the local, metric and empirical kinds "
                                                                "(≈ 10 min on 2 cores)")] = False,
) -> None:
    """Blocks 0,5,10,15,20,25,29 of smollm2-135m: extract, compress (auto, cov_act ≥ 0.99), stitch, bound,
    Lean module, verify; one summary."""

    _quiet_hf()
    t0 = time.perf_counter()
    r = run_demo(out, dtype, bound=bound, all_kinds=all_kinds)
    stdout.print(block_table(r.summary, r.certificates))
    for line in demo_lines(r, out, time.perf_counter() - t0):
        stdout.print(line)
    for line in r.problems:
        print(f"FAIL {line}", file=sys.stderr)
    raise typer.Exit(0 if r.verified else 1)


@app.command()
def schema(out: Annotated[Path, typer.Option(help="directory for the JSON Schemas")] = Path("docs/schemas")) -> None:
    """Export the JSON Schemas of the certificate formats."""

    for p in export_schemas(out):
        stdout.print(f"wrote {p}")
