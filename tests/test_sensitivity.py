"""Sensitivity studies (paper §6.7): prompt shift, threshold sensitivity (Table 4), prompt-set size (Table 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from blockcert.core.metrics import PromptMetrics, Thresholds
from blockcert.errors import BlockCertError
from blockcert.workflows.extract import ExtractOptions, run_extract
from blockcert.workflows.sensitivity import (
    PromptSizeReport,
    ShiftReport,
    ThresholdReport,
    min_coverage_prefixes,
    parse_ks,
    parse_levels,
    passing_counts,
    prompt_shift,
    prompt_size_sensitivity,
    threshold_sensitivity,
)


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _recorded_per_prompt(run: Path, i: int) -> list[dict]:
    return json.loads((run / f"block_{i:03d}" / "metrics.json").read_text())["per_prompt"]


def _pm(cov_act: float, cov_loss: float) -> PromptMetrics:
    return PromptMetrics(prompt=0, n_tokens=1, epsilon=0.0, mae=0.0, cov_act=cov_act, cov_path=1.0, cov_loss=cov_loss)


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory, toy_models) -> Path:
    """bf16 surrogates with τ_act between their typical and worst token errors: partial coverage."""
    out = tmp_path_factory.mktemp("partial") / "run"
    run_extract(
        ExtractOptions(
            str(toy_models["llama-gqa"]),
            "stress",
            "all",
            out,
            surrogate="bf16",
            thresholds=Thresholds(tau_act=0.02, tau_loss=1e-2),
        )
    )
    return out


def test_passing_counts_apply_both_coverages():
    pp = [_pm(1.0, 1.0), _pm(0.95, 1.0), _pm(0.92, 0.5), _pm(0.5, 1.0)]
    assert passing_counts(pp, (0.90, 0.94, 0.97), 0.90) == (2, 2, 1)
    assert passing_counts(pp, (0.90,), 0.0) == (3,)


def test_min_coverage_over_first_k_prompts():
    assert min_coverage_prefixes([1.0, 0.9, 0.95, 0.8], (1, 2, 4)) == (1.0, 0.9, 0.8)


@pytest.mark.parametrize("spec", ["", "a,b", "0.9,1.5"])
def test_bad_levels(spec):
    with pytest.raises(BlockCertError, match="--levels"):
        parse_levels(spec)


@pytest.mark.parametrize("spec", ["", "1,x", "0,4"])
def test_bad_ks(spec):
    with pytest.raises(BlockCertError, match="--k"):
        parse_ks(spec)


def test_threshold_table_of_an_exact_run(toy_run):
    r = threshold_sensitivity(toy_run)
    assert [w.index for w in r.rows] == [0, 1, 2] and r.levels == (0.90, 0.94, 0.97)
    assert all(w.passing == (10, 10, 10) and w.n_prompts == 10 for w in r.rows)


def test_threshold_table_is_rederived_from_the_artifacts(partial_run):
    r = threshold_sensitivity(partial_run, (0.5, 0.8, 0.95), 0.0)
    for w in r.rows:
        recorded = _recorded_per_prompt(partial_run, w.index)
        assert list(w.cov_act) == [p["cov_act"] for p in recorded]
        assert list(w.cov_loss) == [p["cov_loss"] for p in recorded]
        assert w.passing == tuple(sum(c >= a for c in w.cov_act) for a in (0.5, 0.8, 0.95))
        assert list(w.passing) == sorted(w.passing, reverse=True)
    assert sum(w.passing[0] for w in r.rows) > 0 and sum(w.passing[-1] for w in r.rows) < 30  # not trivial


def test_prompt_size_table_is_the_minimum_over_the_first_k(partial_run):
    r = prompt_size_sensitivity(partial_run)
    assert r.ks == (1, 4, 10)
    for w in r.rows:
        cov = [p["cov_act"] for p in _recorded_per_prompt(partial_run, w.index)]
        assert w.min_cov_act == (cov[0], min(cov[:4]), min(cov))


def test_prompt_size_default_ks_fit_a_small_run(toy_models, tmp_path, cli):
    run = tmp_path / "run"
    run_extract(ExtractOptions(str(toy_models["llama-gqa"]), "default", "0", run))
    r = cli("prompt-size", run)
    assert r.code == 0, r.err
    assert "note: the run has 4 prompts; reporting k = 1, 4" in r.err
    assert PromptSizeReport.model_validate_json((run / "prompt_size_sensitivity.json").read_text()).ks == (1, 4)
    r = cli("prompt-size", run, "--k", "1,5", "--out", tmp_path / "ps.json")
    assert r.code == 1 and _errors(r.err) == ["error: --k 5 exceeds the run's 4 prompts; choose k ≤ 4"]
    assert not (tmp_path / "ps.json").exists()


def test_cli_tables_and_json(partial_run, tmp_path, cli):
    r = cli("thresholds", partial_run, "--out", tmp_path / "t.json")
    assert r.code == 0, r.err
    assert "| block | cov_act ≥ 0.9 | cov_act ≥ 0.94 | cov_act ≥ 0.97 |" in r.out
    rep = ThresholdReport.model_validate_json((tmp_path / "t.json").read_text())
    for w in rep.rows:
        assert f"| {w.index} | " + " | ".join(f"{c}/10" for c in w.passing) + " |" in r.out
    r = cli("prompt-size", partial_run, "--k", "2,10", "--blocks", "1", "--out", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert "| block | k = 2 | k = 10 |" in r.out
    assert [w.index for w in PromptSizeReport.model_validate_json((tmp_path / "p.json").read_text()).rows] == [1]


def test_changed_traces_are_refused(toy_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    p = run / "block_001" / "traces.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    r = cli("thresholds", run)
    assert r.code == 1
    assert _errors(r.err) == [
        "error: block 1: block_001/traces.safetensors changed since certification (SHA-256 mismatch); "
        "run `blockcert verify` on the run directory to see everything that is wrong"
    ]
    assert not (run / "threshold_sensitivity.json").exists()


def test_shift_of_exact_surrogates_keeps_them_exact(toy_run, toy_models):
    r = prompt_shift(toy_run, "default", model=str(toy_models["llama-gqa"]))
    assert r.certified_prompts.name == "stress" and r.shifted_prompts.name == "default"
    assert r.shifted_prompts.n_prompts == 4
    for b in r.blocks:
        assert b.after.epsilon == 0.0 and b.after.cov_act == 1.0 and b.certified_before and b.certified_after


def test_shift_re_measures_quantized_surrogates(partial_run, toy_models, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(partial_run, run)
    r = cli("shift", run, "--prompts", "default", "--model", toy_models["llama-gqa"])
    assert r.code == 0, r.err
    rep = ShiftReport.model_validate_json((run / "shift_default.json").read_text())
    certs = {i: json.loads((run / f"block_{i:03d}" / "certificate.json").read_text()) for i in range(3)}
    for b in rep.blocks:
        assert b.before.model_dump(mode="json") == certs[b.index]["metrics"]
        assert b.certificate_digest == certs[b.index]["digest"]
        assert b.after.n_tokens == rep.shifted_prompts.n_tokens and b.after.mae != b.before.mae
        assert f"| {b.index} | {b.before.mae:.3g} → {b.after.mae:.3g} |" in r.out


def test_shift_bad_inputs(partial_run, tmp_path, cli, toy_models):
    from blockcert.arch.toy import build_toy_model

    run = tmp_path / "run"
    shutil.copytree(partial_run, run)
    r = cli("shift", run, "--prompts", "stress", "--model", toy_models["llama-gqa"])
    assert r.code == 1 and len(_errors(r.err)) == 1
    assert "is the one the run was certified on; a shift needs another" in r.err
    other = build_toy_model("llama-gqa", tmp_path / "other", seed=2)
    r = cli("shift", run, "--prompts", "default", "--model", other)
    assert r.code == 1 and len(_errors(r.err)) == 1 and "not the same model" in r.err
    r = cli("shift", run, "--prompts", "default", "--blocks", "0,7", "--model", toy_models["llama-gqa"])
    assert r.code == 1 and _errors(r.err) == ["error: block index 7 is out of range: the model has 3 blocks (0..2)"]
    assert not list(run.glob("shift_*.json"))
