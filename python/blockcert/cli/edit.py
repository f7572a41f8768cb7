"""`edit`, `sweep` and `labels import`: BlockCert-Edit on the command line (paper §7).

`blockcert verify EDIT_DIR` checks an edit directory through `blockcert.verifier.edit.verify_edit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blockcert.cli.app import app, quiet_hf, stdout
from blockcert.workflows.edit import EditOptions, run_edit
from blockcert.workflows.labels import import_labels
from blockcert.workflows.sweep import DEFAULT_ALPHAS, SweepOptions, markdown, run_sweep

CorpusOpt = Annotated[str, typer.Option("--corpus", help="refusal (bundled, 24 prompts) or a corpus JSON file")]
SideOpt = Annotated[str, typer.Option("--side-prompts", help="stress, default, or a prompt file: side effects")]
TokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="greedy tokens per completion")]
MarkersOpt = Annotated[Path | None, typer.Option("--markers", help="classifier marker lists (JSON: refusal, harmful)")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="the run's model (checked by weights hash)")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda or auto (default: the run's)")]

labels_app = typer.Typer(no_args_is_help=True, help="Human labels of an edit's completions.")
app.add_typer(labels_app, name="labels")


def _line(name: str, a) -> str:
    def f(x):
        return "–" if x is None else f"{x:.2f}"

    return (f"{name}: answer accuracy {f(a.answer_accuracy)} ({a.answer_correct}/{a.answer_total}), "
            f"refuse accuracy {f(a.refuse_accuracy)} ({a.refuse_correct}/{a.refuse_total})")


@app.command()
def edit(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `blockcert extract`")],
    patch: Annotated[Path, typer.Option("--patch", help='patch JSON, e.g. {"kind": "scale_mlp", "block": 15, '
                                                        '"alpha": 0.33}')],
    out: Annotated[Path, typer.Option("--out", help="edit directory to write")],
    corpus: CorpusOpt = "refusal",
    side_prompts: SideOpt = "stress",
    max_new_tokens: TokensOpt = 48,
    markers: MarkersOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Apply a patch to a run's certified IR, generate, classify, measure side effects, certify."""
    quiet_hf()
    cert = run_edit(EditOptions(run_dir, patch, out, corpus, side_prompts, max_new_tokens, markers, model, device))
    se = cert.side_effects
    stdout.print(_line("baseline", cert.baseline))
    stdout.print(_line("edited  ", cert.patched))
    stdout.print(f"ε_edit {se.epsilon_edit:.6g}, final deviation {se.final_deviation:.6g}, "
                 f"|ΔPPL|/PPL {se.metrics.relative_delta_ppl}, "
                 f"next-token agreement {se.metrics.next_token_agreement:.4f}")
    stdout.print(f"wrote {out / 'edit_certificate.json'}")


@app.command()
def sweep(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `blockcert extract`")],
    blocks: Annotated[str, typer.Option("--blocks", help="blocks like 0,4,8 or 3-7, or all")],
    alphas: Annotated[str, typer.Option("--alphas", help="MLP scales α, comma-separated")] = DEFAULT_ALPHAS,
    out: Annotated[Path, typer.Option("--out", help="sweep directory (resumable)")] = Path("runs/sweep"),
    corpus: CorpusOpt = "refusal",
    side_prompts: SideOpt = "stress",
    max_new_tokens: TokensOpt = 48,
    markers: MarkersOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """scale_mlp edits over blocks × α: the table, sweep.json and the best edit (rerun to resume)."""
    quiet_hf()
    res = run_sweep(SweepOptions(run_dir, blocks, out, alphas, corpus, side_prompts, max_new_tokens, markers,
                                 model, device))
    print(markdown(res), end="")
    stdout.print(f"wrote {out / 'sweep.json'}")


@labels_app.command("import")
def labels_import(
    edit_dir: Annotated[Path, typer.Argument(help="edit directory written by `blockcert edit`")],
    csv_file: Annotated[Path, typer.Argument(help="CSV: prompt_id,completion_sha256,label "
                                                  "(answer|refuse|harmful|other)")],
) -> None:
    """Record human labels beside the heuristic ones: a new, re-sealed certificate (the old one is kept)."""
    cert, kept = import_labels(edit_dir, csv_file)
    h = cert.human
    stdout.print(_line("human, baseline", h.baseline.accuracy) + f"; harmful rate {h.baseline.harmful_rate}")
    stdout.print(_line("human, edited  ", h.patched.accuracy) + f"; harmful rate {h.patched.harmful_rate}")
    stdout.print(f"wrote {edit_dir / 'edit_certificate.json'}; the previous certificate is kept as {kept}")
