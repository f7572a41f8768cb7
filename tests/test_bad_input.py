"""Bad input: one `error:` line, no traceback, non-zero exit, and nothing left that looks valid."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import error_lines


def _assert_clean_failure(res, *needles: str) -> str:
    assert res.code != 0
    assert "Traceback" not in res.err
    lines = error_lines(res.err)
    assert len(lines) == 1, res.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_missing_model_directory(cli, tmp_path):
    res = cli("extract", "--model", tmp_path / "nope", "--out", tmp_path / "r")
    _assert_clean_failure(res, "not a model directory")
    assert not (tmp_path / "r" / "summary.json").exists()


def test_hub_id_not_in_local_cache(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = cli("extract", "--model", "no-such-org/no-such-model", "--out", tmp_path / "r")
    _assert_clean_failure(res, "not in the local Hugging Face cache", "never downloads")


def test_missing_gguf_file(cli, tmp_path):
    _assert_clean_failure(cli("extract", "--model", tmp_path / "m.gguf", "--out", tmp_path / "r"), "does not exist")


def test_unsupported_architecture_names_it_and_lists_supported(cli, tmp_path):
    from transformers import OPTConfig

    OPTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32,
              architectures=["OPTForCausalLM"]).save_pretrained(tmp_path / "opt")
    line = _assert_clean_failure(cli("extract", "--model", tmp_path / "opt", "--out", tmp_path / "r"), "OPTForCausalLM")
    assert all(f in line for f in ("GPT-2", "Llama", "Mistral", "Qwen2", "Qwen3", "Phi-3", "Gemma 3"))


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "holds no prompts"), (b"  \n\n \n", "holds no prompts"), (b"caf\xe9 au lait\n", "not valid UTF-8")],
)
def test_bad_prompt_files(cli, toy_models, tmp_path, content, needle):
    f = tmp_path / "prompts.txt"
    f.write_bytes(content)
    res = cli("extract", "--model", toy_models["gpt2"], "--prompts", f, "--out", tmp_path / "r")
    _assert_clean_failure(res, needle, str(f))
    assert not (tmp_path / "r" / "summary.json").exists()


def test_bad_jsonl_prompt_file(cli, toy_models, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"text": "fine"}\n{"prompt": "wrong key"}\n')
    _assert_clean_failure(cli("extract", "--model", toy_models["gpt2"], "--prompts", f, "--out", tmp_path / "r"),
                          "line 2")


def test_multiline_prompts_from_jsonl(cli, toy_models, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"text": "line one\nline two"}) + "\n")
    res = cli("extract", "--model", toy_models["gpt2"], "--prompts", f, "--blocks", "0", "--out", tmp_path / "r")
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "r" / "prompts.json").read_text())["prompts"] == ["line one\nline two"]


def test_unknown_prompt_set(cli, toy_models, tmp_path):
    _assert_clean_failure(cli("extract", "--model", toy_models["gpt2"], "--prompts", "nonsense", "--out",
                              tmp_path / "r"), "neither a bundled set")


@pytest.mark.parametrize("spec", ["3", "0,7", "-1", "x"])
def test_block_index_out_of_range(cli, toy_models, tmp_path, spec):
    res = cli("extract", "--model", toy_models["llama-gqa"], "--blocks", spec, "--out", tmp_path / "r")
    _assert_clean_failure(res, "--blocks" if spec in ("x", "-1") else "out of range")


def test_unwritable_output_directory(cli, toy_models, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    res = cli("extract", "--model", toy_models["gpt2"], "--out", tmp_path / "file" / "run")
    _assert_clean_failure(res, "not writable")


def test_prompt_longer_than_context(cli, toy_models, tmp_path):
    f = tmp_path / "long.txt"
    f.write_text("a" * 600 + "\n")  # byte-level tokenizer: 600 tokens > 512 positions
    res = cli("extract", "--model", toy_models["llama-gqa"], "--prompts", f, "--out", tmp_path / "r")
    _assert_clean_failure(res, "600 tokens", "context of 512")


@pytest.mark.parametrize(("flag", "value"), [("--tau-act", "-1"), ("--alpha-loss", "1.5"), ("--dtype", "float16"),
                                             ("--surrogate", "int4"), ("--device", "tpu")])
def test_bad_options(cli, toy_models, tmp_path, flag, value):
    res = cli("extract", "--model", toy_models["gpt2"], flag, value, "--out", tmp_path / "r")
    _assert_clean_failure(res)


def test_nonfinite_activations_are_recorded_and_never_certified(cli, toy_models, tmp_path):
    from transformers import AutoModelForCausalLM

    from blockcert.verifier.run import verify_run

    m = AutoModelForCausalLM.from_pretrained(toy_models["llama-gqa"])
    with torch.no_grad():
        m.model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    m.save_pretrained(tmp_path / "broken")
    import shutil

    for f in toy_models["llama-gqa"].glob("tokenizer*"):
        shutil.copy(f, tmp_path / "broken")
    shutil.copy(toy_models["llama-gqa"] / "special_tokens_map.json", tmp_path / "broken") if (
        toy_models["llama-gqa"] / "special_tokens_map.json").exists() else None
    res = cli("extract", "--model", tmp_path / "broken", "--out", tmp_path / "r")
    _assert_clean_failure(res, "NaN/Inf", "block 1", "not certified")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    # Block 0 replays exactly, but the model's losses are NaN downstream of block 1: nothing is certified.
    assert [b["certified"] for b in summary["blocks"]] == [False, False, False]
    assert [b["epsilon"] for b in summary["blocks"]] == [0.0, None, None]
    cert = json.loads((tmp_path / "r" / "block_001" / "certificate.json").read_text())
    assert cert["metrics"]["nonfinite_tokens"] > 0 and any("NaN/Inf" in r for r in cert["reasons"])
    assert verify_run(tmp_path / "r").ok  # the record itself is honest and verifiable


def test_verify_missing_run_dir(cli, tmp_path):
    _assert_clean_failure(cli("verify", tmp_path / "none"), "does not exist")


def test_show_without_summary(cli, tmp_path):
    _assert_clean_failure(cli("show", tmp_path), "holds no summary.json")


def test_real_entry_point_prints_no_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "blockcert"
    res = subprocess.run([str(exe), "verify", str(tmp_path / "missing")], capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"error: run directory {tmp_path / 'missing'} does not exist"]
