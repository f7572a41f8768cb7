"""Commands for full-model certificates and the sensitivity studies: stitch, semantic, shift, thresholds,
prompt-size. Registered on the main `blockcert` app by cli.py; names and options are a contract.

Tables go to stdout as Markdown (paste-able into a report), progress and notes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import app
from blockcert.errors import BlockCertError
from blockcert.present.markdown import markdown_table
from blockcert.records.fullmodel import CERTIFICATE_FILE, EVALUATION_FILE, SEMANTIC_FILE, FullModelPolicy
from blockcert.records.semantic import is_correct
from blockcert.workflows.semantic import run_semantic
from blockcert.workflows.sensitivity import (
    default_shift_name,
    parse_ks,
    parse_levels,
    prompt_shift,
    prompt_size_markdown,
    prompt_size_sensitivity,
    shift_markdown,
    threshold_markdown,
    threshold_sensitivity,
    write_report,
)
from blockcert.workflows.stitch import StitchOptions, run_stitch

RunDirArg = Annotated[Path, typer.Argument(help="run directory written by `blockcert extract`")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="the run's model (default: the one the run records; checked by weights hash)"),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto (default: the run's)")]
BlocksOpt = Annotated[
    str | None,
    typer.Option("--blocks", help="block indices like 0,5,10 or 3-7, or all (default: every block the run holds)"),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="prompts per forward pass")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="JSON file to write (default: in the run directory)")]


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _g(x: float | None, fmt: str = ".6g") -> str:
    return "n/a" if x is None else format(x, fmt)


def _stitch_report(ev, cert) -> str:

    rows = [
        [
            str(la.layer),
            "yes" if la.stitched else "",
            _g(la.mae, ".4g"),
            _g(la.max_token_error, ".4g"),
            _g(la.mean_abs, ".4g"),
        ]
        for la in ev.layers
    ]
    m = cert.metrics
    lines = [
        f"Stitched replay of {cert.model.name} ({cert.model.dtype}) on '{cert.prompts.name}' "
        f"({m.n_prompts} prompts, {m.n_tokens} tokens), {len(cert.stitched_blocks)} block(s) stitched",
        "",
        markdown_table(["layer", "stitched", "MAE ‖x̂−x‖", "max ‖x̂−x‖", "mean |x̂−x|"], rows),
        "",
        f"- mean per-layer MAE {_g(m.mean_layer_mae)}; worst layer {m.worst_layer} (MAE {_g(m.worst_layer_mae)}); "
        f"max residual {_g(m.max_residual_error)} (layer {m.max_residual_layer})",
        f"- measured deviation max ‖x̂_L − x_L‖₂ (final residual): {_g(m.measured_deviation)}",
        f"- perplexity: baseline {_g(m.baseline_ppl, '.10g')}, stitched {_g(m.stitched_ppl, '.10g')}, "
        f"ΔPPL {_g(m.delta_ppl, '.3g')}, |ΔPPL|/PPL {_g(m.relative_delta_ppl, '.3g')}",
        f"- token losses: max |Δℓ| {_g(m.max_abs_loss_delta, '.3g')}, mean |Δℓ| {_g(m.mean_abs_loss_delta, '.3g')}",
        f"- next-token agreement {m.next_token_agreed}/{m.next_token_positions} ({m.next_token_agreement:.6f})",
        f"- verdict: {'CERTIFIED' if cert.certified else 'NOT certified'}"
        + ("" if cert.certified else f" ({'; '.join(cert.reasons)})"),
    ]
    return "\n".join(lines)


@app.command()
def stitch(
    run_dir: RunDirArg,
    blocks: BlocksOpt = None,
    prompts: Annotated[
        str | None, typer.Option(help="must be the certified prompt set (default: it, from prompts.json)")
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    batch_size: BatchOpt = 8,
    max_ppl_rel: Annotated[float, typer.Option(help="policy: certified needs |ΔPPL|/PPL ≤ this")] = 1e-3,
    min_agreement: Annotated[float, typer.Option(help="policy: certified needs next-token agreement ≥ this")] = 0.99,
    require_certified: Annotated[
        bool, typer.Option(help="policy: certified needs every stitched block certified")
    ] = True,
) -> None:
    """Replace blocks by their surrogates, replay stitched and baseline; write the full-model certificate."""
    from pydantic import ValidationError


    _quiet_hf()
    try:
        policy = FullModelPolicy(
            max_relative_delta_ppl=max_ppl_rel,
            min_next_token_agreement=min_agreement,
            require_certified_blocks=require_certified,
        )
    except ValidationError as e:
        raise BlockCertError(f"bad policy: {e.errors()[0]['loc'][0]} {e.errors()[0]['msg']}") from None
    res = run_stitch(StitchOptions(run_dir, blocks, prompts, model, device, batch_size, policy))
    typer.echo(_stitch_report(res.evaluation, res.certificate))
    typer.echo(f"wrote {run_dir / EVALUATION_FILE} and {run_dir / CERTIFICATE_FILE}")


@app.command()
def semantic(
    run_dir: RunDirArg,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    probe: Annotated[Path | None, typer.Option(help="probe JSON file (default: the bundled 30-prompt probe)")] = None,
    batch_size: BatchOpt = 8,
) -> None:
    """Greedy next token of the stitched model vs the baseline (fidelity) and vs human labels (correctness)."""

    _quiet_hf()
    res = run_semantic(run_dir, model, device, probe, batch_size)
    rows = [
        [
            str(i.index),
            i.category,
            repr(i.label_token),
            repr(i.baseline_answer),
            repr(i.stitched_answer),
            "yes" if i.stitched_token == i.baseline_token else "NO",
            "yes" if is_correct(i.baseline_answer, i.label_token) else "no",
            "yes" if is_correct(i.stitched_answer, i.label_token) else "no",
        ]
        for i in res.evaluation.items
    ]
    m = res.evaluation.metrics
    typer.echo(
        f"Semantic probe '{res.evaluation.probe_name}' ({m.n_prompts} prompts), labelling {res.evaluation.labelling}\n"
    )
    typer.echo(
        markdown_table(["#", "category", "label", "baseline", "stitched", "same", "baseline ok", "stitched ok"], rows)
    )
    typer.echo(
        f"\n- fidelity (stitched == baseline): {m.fidelity_agreed}/{m.n_prompts} ({m.fidelity:.3f})\n"
        f"- absolute correctness vs labels: baseline {m.baseline_correct}/{m.n_prompts} ({m.baseline_accuracy:.3f}), "
        f"stitched {m.stitched_correct}/{m.n_prompts} ({m.stitched_accuracy:.3f})"
    )
    typer.echo(f"wrote {run_dir / SEMANTIC_FILE}; recorded in {run_dir / CERTIFICATE_FILE}")


@app.command()
def shift(
    run_dir: RunDirArg,
    prompts: Annotated[str, typer.Option(help="the other prompt set: default, stress, a text file or .jsonl")],
    model: ModelOpt = None,
    device: DeviceOpt = None,
    blocks: BlocksOpt = None,
    batch_size: BatchOpt = 8,
    out: OutOpt = None,
) -> None:
    """Re-measure each block's error and coverages on another prompt set, surrogates unchanged."""

    _quiet_hf()
    report = prompt_shift(run_dir, prompts, model, device, blocks, batch_size)
    path = out or run_dir / default_shift_name(prompts)
    write_report(path, report)
    typer.echo(shift_markdown(report))
    typer.echo(f"\nwrote {path}")


@app.command()
def thresholds(
    run_dir: RunDirArg,
    levels: Annotated[str, typer.Option(help="activation-coverage levels, comma-separated")] = "0.90,0.94,0.97",
    min_cov_loss: Annotated[float, typer.Option(help="loss coverage each counted prompt must reach")] = 0.90,
    blocks: BlocksOpt = None,
    out: OutOpt = None,
) -> None:
    """Paper Table 4: per block, how many prompts reach each cov_act level at cov_loss ≥ min."""

    report = threshold_sensitivity(run_dir, parse_levels(levels), min_cov_loss, blocks)
    path = out or run_dir / "threshold_sensitivity.json"
    write_report(path, report)
    typer.echo(threshold_markdown(report))
    typer.echo(f"\nwrote {path}")


@app.command("prompt-size")
def prompt_size(
    run_dir: RunDirArg,
    k: Annotated[str | None, typer.Option("--k", help="prompt counts, comma-separated (default 1,4,10)")] = None,
    blocks: BlocksOpt = None,
    out: OutOpt = None,
) -> None:
    """Paper Table 5: per block, the minimum activation coverage over the first k prompts."""

    report = prompt_size_sensitivity(run_dir, parse_ks(k) if k is not None else None, blocks)
    path = out or run_dir / "prompt_size_sensitivity.json"
    write_report(path, report)
    typer.echo(prompt_size_markdown(report))
    typer.echo(f"\nwrote {path}")


