"""Names of the files inside a run directory (a contract other tools rely on)."""

from pathlib import Path

SUMMARY = "summary.json"
PROMPTS = "prompts.json"
CERTIFICATE = "certificate.json"
METRICS = "metrics.json"
IR_SPEC = "ir.json"
IR_TENSORS = "ir.safetensors"
TRACES = "traces.safetensors"
LOSSES = "losses.safetensors"


def block_dir(run_dir: Path, index: int) -> Path:
    return run_dir / f"block_{index:03d}"


def rel(run_dir: Path, path: Path) -> str:
    return path.relative_to(run_dir).as_posix()
