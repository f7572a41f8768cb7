"""The public Python API: what a notebook user calls. The CLI is a thin layer over the same functions.

In memory first, on disk when asked:

    import blockcert
    model = blockcert.load_model("smollm2-135m")          # or blockcert.wrap(hf_model, tokenizer)
    run = blockcert.extract(model, ["The capital of France is"], blocks=[0, 5])
    run                                                    # the block table (terminal or notebook)
    report = blockcert.verify(run)                         # truthy exactly when every check holds
    run = run.save("runs/demo")                            # the files `blockcert extract --out` writes
    blockcert.stitch(run); blockcert.bound(run)
    formal = blockcert.to_formal(run); text = blockcert.lean_module(formal)
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from blockcert.arch.loading import LoadedModel, wrap_model
from blockcert.arch.loading import load_model as _load_model
from blockcert.core.metrics import Policy, Thresholds
from blockcert.core.selection import parse_blocks
from blockcert.errors import BlockCertError
from blockcert.formal.lean import module_name, render_module
from blockcert.formal.mirror import FormalRun
from blockcert.records.bound import BoundArtifact
from blockcert.store.formal_inputs import build_formal
from blockcert.store.prompts import PromptSet, load_prompts, prompt_set
from blockcert.surrogates import parse_kind
from blockcert.verifier.report import RunReport
from blockcert.verifier.run import verify_run
from blockcert.version import API_NAMES
from blockcert.workflows.bound import BoundOptions, run_bound
from blockcert.workflows.executor import Executor
from blockcert.workflows.extract import extract_run
from blockcert.workflows.run import Run
from blockcert.workflows.run import load_run as _load_run
from blockcert.workflows.stitch import StitchOptions, StitchResult, run_stitch

Model = LoadedModel
Report = RunReport

__all__ = list(API_NAMES)


def load_model(spec: str, dtype: str = "float32", device: str = "cpu", streaming: bool = False) -> Model:
    """`smollm2-135m`, a model directory, a .gguf file or a cached hub id (never downloaded).

    `streaming=True` (a Llama-family safetensors directory) keeps the decoder layers on disk and reads one
    at a time: peak memory is one layer plus embeddings and head, whatever the depth."""
    return _load_model(spec, dtype, device, streaming)


def wrap(hf_model, tokenizer, name: str | None = None) -> Model:
    """A Hugging Face causal LM and its tokenizer already in memory."""
    return wrap_model(hf_model, tokenizer, name)


def _prompts(prompts: str | Sequence[str]) -> PromptSet:
    if isinstance(prompts, str):
        return load_prompts(prompts)  # a bundled set name or a file
    return prompt_set(list(prompts))


def extract(
    model: Model | str,
    prompts: str | Sequence[str],
    blocks: str | Sequence[int] = "all",
    surrogate: str = "exact",
    out: Path | str | None = None,
    thresholds: Thresholds = Thresholds(),
    policy: Policy = Policy(),
    batch_size: int = 8,
    executor: Executor | None = None,
    trace_dtype: str | None = None,
) -> Run:
    """Trace `model` on `prompts`, derive a surrogate of each block, measure and certify it.

    `prompts` is a list of strings or a bundled set name (`default`, `stress`); `blocks` a list of indices
    or a spec string (`0,5,10`, `3-7`, `all`). Without `out` nothing is written and the run is held in
    memory; with it each block's files are written there as soon as they exist (memory holds one block's
    IR at a time) and the returned `Run` refers to it. `executor` runs the per-block certification
    (`blockcert.workflows.executor`: local by default, `RayExecutor(address)` for a cluster).
    `trace_dtype` (`bfloat16`, `float16`, `float32`) stores the traces compactly; ε is measured on the
    stored values and the certificate records the dtype and the rounding.
    """
    lm = load_model(model) if isinstance(model, str) else model
    parse_kind(surrogate)  # a bad kind fails before the model runs
    spec = blocks if isinstance(blocks, str) else ",".join(str(int(b)) for b in blocks)
    indices = parse_blocks(spec, lm.num_layers)
    if batch_size < 1:
        raise BlockCertError("batch_size must be at least 1")
    return extract_run(lm, _prompts(prompts), indices, surrogate, thresholds, policy, batch_size, executor,
                       out=Path(out) if out is not None else None, trace_dtype=trace_dtype)


def load_run(path: Path | str) -> Run:
    """A saved run: its manifest and every block certificate, each checked against its digest."""
    return _load_run(path)


def stitch(run: Run | Path | str, blocks: str | None = None, model: str | None = None) -> StitchResult:
    """Baseline and stitched model side by side; writes the full-model certificate into the run."""
    path = run.require_path("stitch") if isinstance(run, Run) else Path(run)
    return run_stitch(StitchOptions(path, blocks=blocks, model=model))


def bound(run: Run | Path | str, radius: float | None = None, model: str | None = None, **options) -> BoundArtifact:
    """Per-block constants of every kind, composed; writes bound.json, bound.md and the plot into the run."""
    path = run.require_path("bound") if isinstance(run, Run) else Path(run)
    return run_bound(BoundOptions(path, radius, model, **options))[0]


def verify(run: Run | Path | str, model: str | None = None) -> Report:
    """Re-derive every hash and number of the run from its files (an in-memory run: from its bytes)."""
    if isinstance(run, Run) and run.path is None:
        with tempfile.TemporaryDirectory(prefix="blockcert-verify-") as tmp:
            return verify_run(run.save(Path(tmp) / "run").path, model)
    return verify_run(run.path if isinstance(run, Run) else Path(run), model)


def to_formal(run: Run | Path | str) -> FormalRun:
    """The run's numbers as the exact record Lean's `check` reads (formal_run.json's content)."""
    path = run.require_path("to_formal") if isinstance(run, Run) else Path(run)
    return build_formal(path).run


def lean_module(formal_run: FormalRun) -> str:
    """The generated Lean module for a formal run (the text `blockcert lean` writes)."""
    return render_module(formal_run, module_name(formal_run.name))
