"""The formal record in `blockcert verify`: the run's numbers against Lean's `check`, and the files made from them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from blockcert.errors import BlockCertError
from blockcert.formal.lean import module_name, render_module
from blockcert.formal.mirror import FORMAL_FILE, run_problems
from blockcert.store.files import resolve_inside
from blockcert.store.formal_inputs import FormalBuild, NothingToState, build_formal
from blockcert.store.formal_json import MAX_FORMAL_BYTES, parse_formal
from blockcert.store.strict_json import parse_strict, read_regular


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
    return problems + _stale_outputs(run_dir, built)


def _stale_outputs(run_dir: Path, built: FormalBuild) -> list[str]:
    """formal_run.json and its module, when present, must say exactly what the certificates say now: the
    numbers, the provenance keys (`source`, `lipschitz_kind`, ...) and the module they name."""
    try:
        path = resolve_inside(run_dir, FORMAL_FILE)
        if not path.exists():
            return []
        data = read_regular(path, FORMAL_FILE, MAX_FORMAL_BYTES)
        recorded = parse_formal(data.decode("utf-8"))
        info = parse_strict(data)
    except (BlockCertError, UnicodeDecodeError) as e:
        return [f"{FORMAL_FILE}: {e}"]
    # The name follows the directory's; a renamed or moved run is still the same run.
    run = replace(built.run, name=recorded.name)
    if recorded != run:
        return [f"{FORMAL_FILE} differs from the run's certificates (stale or edited): rerun `blockcert lean`"]
    name = module_name(run.name, built.run_id)
    out = []
    for key, want in {**built.info, "lean_file": f"{name}.lean"}.items():
        if info.get(key) != want:
            out.append(f"{FORMAL_FILE}: field {key} = {str(info.get(key))[:60]!r} is not what the run gives "
                       f"({str(want)[:60]!r}): rerun `blockcert lean`")
    if info.get("lean_module") not in (name, f"BlockCert.Runs.{name}"):
        out.append(f"{FORMAL_FILE}: field lean_module = {str(info.get('lean_module'))[:60]!r} names another module "
                   f"than {name}: rerun `blockcert lean`")
    try:
        copy = resolve_inside(run_dir, f"{name}.lean")
        if not copy.exists():
            return out + [f"{name}.lean is missing beside {FORMAL_FILE}: rerun `blockcert lean`"]
        text = read_regular(copy, f"{name}.lean", MAX_FORMAL_BYTES).decode("utf-8")
    except (BlockCertError, UnicodeDecodeError) as e:
        return out + [str(e)]
    if text != render_module(run, name):
        out.append(f"{name}.lean differs from the module generated from the run's certificates: rerun `blockcert lean`")
    return out
