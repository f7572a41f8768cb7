"""Shared fixtures: small random models built once per session, and an in-process CLI runner."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from blockcert.arch.toy import build_toy_model
from blockcert.cli.app import quiet_hf as _quiet_hf

_quiet_hf()


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory) -> dict[str, Path]:
    """Every toy variant, built once (each is a few hundred KB)."""
    from blockcert.arch.toy import VARIANTS

    root = tmp_path_factory.mktemp("toy-models")
    return {v: build_toy_model(v, root / v) for v in VARIANTS}


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory, toy_models) -> Path:
    """A pristine certified run of the GQA Llama toy on the stress prompts; copy it before changing it."""
    from blockcert.workflows.extract import ExtractOptions, run_extract

    out = tmp_path_factory.mktemp("runs") / "llama-gqa"
    run_extract(ExtractOptions(str(toy_models["llama-gqa"]), "stress", "all", out))
    return out


@pytest.fixture
def run_copy(toy_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(toy_run, dst)
    return dst


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def one_thread():
    """Many small tensor operations: one torch thread is fastest on two shared cores, and immune to a busy
    machine. A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `blockcert ARGS...` in-process through the real entry point (error handling included)."""
    from blockcert.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["blockcert", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]
