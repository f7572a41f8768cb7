"""TODO-DOC"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from blockcert.errors import BlockCertError
from blockcert.formal.lean import module_name, render_module
from blockcert.formal.mirror import FORMAL_FILE, FormalRun, run_problems
from blockcert.store.formal_inputs import NothingToState, build_formal
from blockcert.store.formal_json import FormalInputError, read_formal


def formal_problems(run_dir) -> list[str]:
    """For `blockcert verify`: the run's numbers against the hypotheses of the composition theorem (Lean's
    `check`, exactly), and any `formal_run.json` or generated module in the run directory against the
    numbers they were generated from. One line per problem; never raises."""
    run_dir = Path(run_dir)
    try:
        built = build_formal(run_dir)
    except NothingToState:
        return []  # an honest record of a run with no finite block claims nothing
    except BlockCertError as e:
        return [f"formal run: {e}"]
    problems = [f"formal check: {p}" for p in run_problems(built.run)]
    return problems + _stale_outputs(run_dir, built.run)


def _stale_outputs(run_dir, run: FormalRun) -> list[str]:
    """formal_run.json and the module copy, when present, must say what the certificates say now."""

    path = run_dir / FORMAL_FILE
    if not path.is_file():
        return []
    try:
        recorded = read_formal(path)
    except FormalInputError as e:
        return [f"{FORMAL_FILE}: {e}"]
    # The name follows the directory's; a renamed or moved run is still the same run.
    run = replace(run, name=recorded.name)
    if recorded != run:
        return [f"{FORMAL_FILE} differs from the run's certificates (stale or edited): rerun `blockcert lean`"]
    name = module_name(run.name)
    copy = run_dir / f"{name}.lean"
    if copy.is_file() and copy.read_text(encoding="utf-8") != render_module(run, name):
        return [f"{copy.name} differs from the module generated from the run's certificates: rerun `blockcert lean`"]
    return []
