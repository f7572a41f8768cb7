"""Regression tests for the hostile probe of issue 11: one test (or parameter) per numbered case.

Each attack either makes `verify` FAIL with a line naming the file and field, or makes the command print
exactly one `error:` line; none may produce a traceback or an acceptance.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from blockcert.core.selection import parse_blocks
from blockcert.errors import BlockCertError
from blockcert.store.formal_json import FormalInputError, parse_formal
from blockcert.store.prompts import load_prompts
from blockcert.verifier.run import verify_run
from blockcert.workflows.extract import ExtractOptions, run_extract
from tests._forge import reseal, reseal_manifest
from tests.conftest import error_lines


def lines(run: Path, **kw) -> str:
    rep = verify_run(run, **kw)
    assert not rep.ok, "verify accepted a modified run"
    return "\n".join(rep.lines())


# ---- 1. blocks from another run; forged manifest fields; deleted blocks --------------------------------

def test_1_block_from_another_model_is_refused(run_copy, toy_models, tmp_path):
    other = tmp_path / "other"
    run_extract(ExtractOptions(str(toy_models["llama-mha"]), "stress", "0", other))
    shutil.rmtree(run_copy / "block_000")
    shutil.copytree(other / "block_000", run_copy / "block_000")
    reseal_manifest(run_copy)  # the forger lists it, with digests
    out = lines(run_copy)
    assert "certificate field model.weights_sha256" in out and "summary.json says" in out


@pytest.mark.parametrize("field,value", [
    ("thresholds", {"tau_act": 1.0, "tau_loss": 1e-3}), ("model", None), ("all_certified", False),
])
def test_1_forged_manifest_fields_are_caught(run_copy, field, value):
    def mutate(s):
        if field == "model":
            s["model"]["weights_sha256"] = "0" * 64
        else:
            s[field] = value
    reseal_manifest(run_copy, mutate)
    out = lines(run_copy)
    assert "summary.json" in out and (field in out or "model.weights_sha256" in out), out


@pytest.mark.parametrize("key", ["mae", "max_relative_error", "cov_path", "n_tokens"])
def test_1_forged_entry_fields_are_caught(run_copy, key):
    def mutate(s):
        s["blocks"][1][key] = 123 if key == "n_tokens" else 0.123
    reseal_manifest(run_copy, mutate)
    assert f"summary.json field blocks[1].{key} = " in lines(run_copy)


def test_1_unsealed_manifest_edit_is_caught(run_copy):
    s = json.loads((run_copy / "summary.json").read_text())
    s["thresholds"]["tau_act"] = 1.0
    (run_copy / "summary.json").write_text(json.dumps(s))
    assert "does not match its digest (field digest)" in lines(run_copy)


def test_1_deleted_block_is_caught(run_copy):
    shutil.rmtree(run_copy / "block_002")
    out = lines(run_copy)
    assert "block_002/certificate.json is missing, but summary.json lists block 2" in out


def test_1_empty_run_is_not_ok(run_copy):
    for d in run_copy.glob("block_*"):
        shutil.rmtree(d)
    reseal_manifest(run_copy, lambda s: s.update(blocks=[], all_certified=True))
    assert "a run with no block certificate certifies nothing" in lines(run_copy)


def test_1_show_refuses_a_forged_manifest(run_copy, cli):
    reseal_manifest(run_copy, lambda s: s["blocks"][0].update(mae=0.5))
    res = cli("show", run_copy)
    assert res.code == 1 and len(error_lines(res.err)) == 1 and "blocks[0].mae" in res.err


# ---- 2. forged constants and per-prompt ε ---------------------------------------------------------------

def test_2_resealed_per_prompt_epsilon_is_rederived(run_copy):
    bdir = run_copy / "block_001"
    m = json.loads((bdir / "metrics.json").read_text())
    m["per_prompt"][0]["epsilon"] = 0.25
    (bdir / "metrics.json").write_text(json.dumps(m))
    reseal(run_copy, 1)
    assert "field per_prompt[0].epsilon = 0.25, recomputed" in lines(run_copy)


# ---- 3. reads outside the run, FIFOs, devices --------------------------------------------------------------

def test_3_symlinked_summary_is_refused(run_copy, tmp_path):
    target = tmp_path / "elsewhere.json"
    os.replace(run_copy / "summary.json", target)
    os.symlink(target, run_copy / "summary.json")
    assert "summary.json is a symlink" in lines(run_copy)


def test_3_fifo_summary_does_not_hang(run_copy):
    (run_copy / "summary.json").unlink()
    os.mkfifo(run_copy / "summary.json")
    assert "not a regular file" in lines(run_copy)


def test_3_symlink_to_dev_zero_is_refused(run_copy):
    (run_copy / "prompts.json").unlink()
    os.symlink("/dev/zero", run_copy / "prompts.json")
    assert "prompts.json is a symlink" in lines(run_copy)


# ---- 4. extract never writes through a symlink out of --out ----------------------------------------------

def test_4_extract_refuses_symlinked_block_dir(toy_models, tmp_path, cli):
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.mkdir()
    os.symlink(victim, out / "block_000")
    res = cli("extract", "--model", toy_models["llama-gqa"], "--blocks", "0", "--out", out)
    assert res.code != 0 and len(error_lines(res.err)) == 1 and "symlink" in res.err
    assert list(victim.iterdir()) == []


def test_4_files_are_world_readable(toy_run):
    for p in toy_run.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_10_failed_extract_leaves_no_directory(tmp_path, cli):
    out = tmp_path / "never"
    res = cli("extract", "--model", tmp_path / "nope", "--out", out)
    assert res.code != 0 and not out.exists()


# ---- 5. no tracebacks: hostile JSON and tensors -----------------------------------------------------------

@pytest.mark.parametrize("text,why", [
    ('{"a": Infinity}', "not a JSON number"), ('{"a": NaN}', "not a JSON number"),
    ('{"a": 1e309}', "overflows"), ('[' * 100_000 + ']' * 100_000, "nested deeper"),
    ('{"a": ' + "9" * 5000 + "}", "characters"),
])
def test_5_hostile_json_in_a_sealed_file_is_one_line(run_copy, text, why):
    (run_copy / "block_000" / "certificate.json").write_text(text)
    assert why in lines(run_copy)


def test_5_directory_where_a_file_belongs(run_copy):
    p = run_copy / "block_001" / "metrics.json"
    p.unlink()
    p.mkdir()
    assert "not a regular file" in lines(run_copy)


@pytest.mark.parametrize("bad", ["a\x00b", "x" * 5000])
def test_5_nul_and_long_artifact_names(run_copy, bad):
    reseal(run_copy, 1, lambda d: d["artifacts"].update({bad: "0" * 64}))
    assert "too long or holds a NUL byte" in lines(run_copy)


def test_5_resealed_ir_without_a_tensor(run_copy):
    from safetensors.torch import load, save

    p = run_copy / "block_001" / "ir.safetensors"
    ts = load(p.read_bytes())
    del ts["mlp.up.weight"]
    p.write_bytes(save(ts))
    reseal(run_copy, 1)
    assert "lacks tensor 'mlp.up.weight'" in lines(run_copy)


def test_5_resealed_traces_with_a_wrong_shape_and_dtype(run_copy):
    from safetensors.torch import load, save

    p = run_copy / "block_002" / "traces.safetensors"
    ts = load(p.read_bytes())
    ts["x_in"] = ts["x_in"][:, :, :-1].contiguous()
    ts["positions"] = ts["positions"].to(dtype=ts["x_in"].dtype)
    p.write_bytes(save(ts))
    reseal(run_copy, 2)
    assert "tensor 'x_in' has shape" in lines(run_copy) or "has dtype" in lines(run_copy)


def test_5_resealed_corrupt_safetensors(run_copy):
    p = run_copy / "block_000" / "ir.safetensors"
    p.write_bytes(b"\xff" * 64)
    reseal(run_copy, 0)
    assert "not a safetensors file" in lines(run_copy)


def test_5_prompts_path_is_a_directory(tmp_path, toy_models, cli):
    (tmp_path / "p").mkdir()
    res = cli("extract", "--model", toy_models["llama-gqa"], "--prompts", tmp_path / "p", "--out", tmp_path / "r")
    assert res.code != 0 and len(error_lines(res.err)) == 1 and "is a directory" in res.err


# ---- 6. Lean module names are unique per run -----------------------------------------------------------

def test_6_two_runs_named_alike_get_different_modules(toy_run, tmp_path, toy_models):
    from blockcert.workflows.lean import instantiate

    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    shutil.copytree(toy_run, a)
    run_extract(ExtractOptions(str(toy_models["llama-gqa"]), "default", "0", b))
    ma, mb = instantiate(a), instantiate(b)
    assert ma.name != mb.name and ma.is_file() and mb.is_file()


# ---- 7. bounded work in check ---------------------------------------------------------------------------

def test_7_huge_exponents_are_refused_at_once():
    blocks = ",".join('{"index":0,"epsilon":1e100000,"lipschitz":1e100000,"act_covered":1,"n_tokens":1,'
                      '"loss_covered":0,"loss_total":0,"certified":false}' for _ in range(60))
    text = ('{"format":"blockcert.formal/1","policy":{"alpha_act":0.9,"alpha_loss":0.9},"blocks":[' + blocks
            + '],"claimed_bound":null,"measured_deviation":null}')
    with pytest.raises(FormalInputError, match="number too large"):
        parse_formal(text)


# ---- 8. files nobody checks ------------------------------------------------------------------------------

def test_8_unlisted_file_is_reported(run_copy):
    (run_copy / "bound.md").write_text("forged table\n")
    assert "bound.md is not listed in summary.json field files" in lines(run_copy)


# ---- 9. the certificate's bytes are what was certified ---------------------------------------------------

def test_9_duplicate_key_is_refused(run_copy):
    p = run_copy / "block_000" / "certificate.json"
    text = p.read_text()
    p.write_text(text.replace("{", '{"certified": true, ', 1))
    assert "duplicate key 'certified'" in lines(run_copy)


def test_9_string_for_an_integer_is_refused(run_copy):
    reseal(run_copy, 0)
    p = run_copy / "block_000" / "certificate.json"
    d = json.loads(p.read_text())
    d["block_index"] = "0"
    p.write_text(json.dumps(d))
    assert "field block_index" in lines(run_copy)


# ---- 10. prompts and --blocks ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["0,3-1", "１", "1_0", "+1", " ", "0-", "-1"])
def test_10_block_specs_are_strict(spec):
    with pytest.raises(BlockCertError):
        parse_blocks(spec, 12)


def test_10_bom_is_not_prompt_text(tmp_path):
    p = tmp_path / "p.txt"
    p.write_bytes("\ufeffHello there\nSecond\n".encode())
    assert load_prompts(str(p)).prompts == ("Hello there", "Second")
