"""The verifier rejects every tampering it can detect, with one line naming what is wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from blockcert.core.interpreter import run_block
from blockcert.core.metrics import Thresholds
from blockcert.core.traces import BlockTrace
from blockcert.store.tensors import load_ir, load_record, save_record
from blockcert.verifier.run import verify_run
from blockcert.workflows.extract import ExtractOptions, run_extract
from tests._forge import reseal, reseal_manifest


def _cert_path(run: Path, i: int) -> Path:
    return run / f"block_{i:03d}" / "certificate.json"


def problems(run: Path, **kw) -> str:
    rep = verify_run(run, **kw)
    assert not rep.ok
    return "\n".join(rep.lines())


def test_pristine_run_verifies(toy_run):
    rep = verify_run(toy_run)
    assert rep.ok, rep.lines()
    assert rep.loss_coverage_source == "recorded per-token losses"


@pytest.mark.parametrize(
    "name", ["ir.json", "ir.safetensors", "traces.safetensors", "losses.safetensors", "metrics.json"]
)
def test_any_changed_byte_in_any_artifact_is_caught(run_copy, name):
    path = run_copy / "block_001" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert f"block_001/{name}: SHA-256 mismatch" in problems(run_copy)


def test_changed_prompts_file_is_caught_in_every_block(run_copy):
    p = run_copy / "prompts.json"
    p.write_text(p.read_text().replace("compiler", "Compiler"))
    assert problems(run_copy).count("prompts.json: SHA-256 mismatch") == 3


def test_edited_certificate_breaks_its_digest(run_copy):
    path = _cert_path(run_copy, 2)
    d = json.loads(path.read_text())
    d["metrics"]["mae"] = 1e-9
    path.write_text(json.dumps(d))
    assert "digest does not match its contents" in problems(run_copy)


def test_resealed_metric_change_is_recomputed_and_caught(run_copy):
    reseal(run_copy, 0, lambda d: d["metrics"].update(epsilon=0.5))
    assert "metrics.epsilon: certificate says 0.5, recomputed 0.0" in problems(run_copy)


def test_resealed_flipped_verdict_is_caught(run_copy):
    reseal(run_copy, 1, lambda d: d.update(certified=False))
    assert "certified=False but its metrics and policy give True" in problems(run_copy)


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory, toy_models) -> Path:
    out = tmp_path_factory.mktemp("q") / "run"
    run_extract(ExtractOptions(str(toy_models["llama-gqa"]), "default", "0", out, surrogate="bf16",
                               thresholds=Thresholds(tau_act=1e-6)))
    return out


def test_resealed_threshold_change_is_caught(quantized_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(quantized_run, run)
    reseal(run, 0, lambda d: d["thresholds"].update(tau_act=1.0))
    assert "certificate field thresholds.tau_act = 1.0, summary.json says 1e-06" in problems(run)
    reseal_manifest(run, lambda s: s["thresholds"].update(tau_act=1.0))  # the forger edits the manifest too
    assert "metrics.act_covered" in problems(run)


def test_resealed_policy_change_is_caught(quantized_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(quantized_run, run)
    reseal(run, 0, lambda d: d["policy"].update(alpha_act=0.0, alpha_loss=0.0))
    assert "certified=False but its metrics and policy give True" in problems(run)


def test_missing_artifact_is_caught(run_copy):
    (run_copy / "block_002" / "traces.safetensors").unlink()
    assert "artifact block_002/traces.safetensors is missing" in problems(run_copy)


def test_missing_certificate_is_caught(run_copy):
    _cert_path(run_copy, 0).unlink()
    assert "block_000/certificate.json is missing, but summary.json lists block 0" in problems(run_copy)


def test_dropping_an_artifact_from_the_certificate_is_caught(run_copy):
    reseal(run_copy, 1, lambda d: d["artifacts"].pop("block_001/traces.safetensors"))
    assert "does not list required artifact block_001/traces.safetensors" in problems(run_copy)


@pytest.mark.parametrize("bad", ["../outside.json", "/etc/hostname", "block_001/../../outside.json"])
def test_artifact_paths_escaping_the_run_are_refused(run_copy, bad):
    (run_copy.parent / "outside.json").write_text("{}")
    reseal(run_copy, 1, lambda d: d["artifacts"].update({bad: "0" * 64}))
    assert "escapes the run directory" in problems(run_copy)


def test_symlink_out_of_the_run_is_refused(run_copy):
    target = run_copy.parent / "elsewhere.safetensors"
    os.replace(run_copy / "block_001" / "losses.safetensors", target)
    os.symlink(target, run_copy / "block_001" / "losses.safetensors")
    assert "block_001/losses.safetensors is a symlink" in problems(run_copy)


def test_json_report_shape(run_copy, cli):
    ok = cli("verify", run_copy, "--json")
    assert ok.code == 0 and json.loads(ok.out)["ok"] is True
    (run_copy / "block_000" / "metrics.json").write_text("{}")
    bad = cli("verify", run_copy, "--json")
    report = json.loads(bad.out)
    assert bad.code == 1 and report["ok"] is False
    assert [b["ok"] for b in report["blocks"]] == [False, True, True]
    assert report["blocks"][0]["index"] == 0 and report["blocks"][0]["errors"]


def test_cli_prints_one_line_per_problem(run_copy, cli):
    (run_copy / "block_000" / "ir.json").write_text("{}")
    (run_copy / "block_002" / "ir.json").write_text("{}")
    res = cli("verify", run_copy)
    assert res.code == 1
    fails = [line for line in res.err.splitlines() if line.startswith("FAIL ")]
    assert fails == [
        "FAIL block_000/ir.json: SHA-256 differs from summary.json field files['block_000/ir.json'] "
        "(changed since it was recorded)",
        "FAIL block_002/ir.json: SHA-256 differs from summary.json field files['block_002/ir.json'] "
        "(changed since it was recorded)",
        "FAIL block 0: artifact block_000/ir.json: SHA-256 mismatch (file changed since certification)",
        "FAIL block 2: artifact block_002/ir.json: SHA-256 mismatch (file changed since certification)",
    ]


def test_forged_traces_pass_alone_but_fail_against_the_model(run_copy, toy_models):
    """A forger who rewrites traces consistently fools the file checks; re-running the model does not."""
    bdir = run_copy / "block_001"
    tr, ir = load_record(bdir / "traces.safetensors", BlockTrace), load_ir(bdir)
    x_in = tr.x_in * 1.01
    forged = BlockTrace(x_in, run_block(ir, x_in, tr.valid, tr.positions), tr.valid, tr.positions,
                        tr.native_mask, tr.native_argmax)
    save_record(bdir / "traces.safetensors", forged)
    reseal(run_copy, 1)
    assert verify_run(run_copy).ok
    rep = verify_run(run_copy, model=str(toy_models["llama-gqa"]))
    assert rep.loss_coverage_source == "recomputed from the model"
    assert any("traces.x_in differ from a fresh native run" in line for line in rep.lines())


def test_verify_with_the_model_accepts_a_genuine_run(toy_run, toy_models):
    rep = verify_run(toy_run, model=str(toy_models["llama-gqa"]))
    assert rep.ok, rep.lines()


def test_verify_with_a_different_model_is_refused(toy_run, toy_models, cli):
    res = cli("verify", toy_run, "--model", toy_models["llama-mha"])
    assert res.code == 1 and "not the same model" in res.err
    assert torch.is_grad_enabled()
