"""Mistral, Qwen2 and Phi-3: declared IRs that replay the native layer exactly, and every command on them."""

from __future__ import annotations

import pytest
import torch

import blockcert
from blockcert.arch.native import NativeModel
from blockcert.arch.toy import build_toy_model
from tests._forge import reseal

FAMILIES = {
    "mistral": "MistralForCausalLM", "qwen2-bias": "Qwen2ForCausalLM", "phi3-fused": "Phi3ForCausalLM",
    "qwen3-qknorm": "Qwen3ForCausalLM", "gemma3-window": "Gemma3ForCausalLM",
}


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {v: build_toy_model(v, root / v) for v in FAMILIES}


@pytest.mark.parametrize("variant", list(FAMILIES))
def test_exact_copy_replays_bit_for_bit_in_float32(family_models, variant):
    lm = blockcert.load_model(str(family_models[variant]))
    assert lm.architecture == FAMILIES[variant]
    run = blockcert.extract(lm, "stress")
    for c in run.certificates.values():
        assert c.metrics.epsilon == 0.0 and c.metrics.cov_path == 1.0 and c.certified


@pytest.mark.parametrize("variant", list(FAMILIES))
def test_exact_copy_in_float64_is_within_1e_15_relative(family_models, variant):
    # Bit-identical for Mistral and Qwen2. Phi-3's fused qkv / gate_up matmuls accumulate in another
    # order than the split ones in float64 (not in float32), so its bound is the stated 1e-15 relative.
    # Gemma 3 in float64: HF's eager attention turns a padded query row whose whole window is padding into
    # NaN, which zero-probability padded keys then spread to real tokens (0 · NaN); prompts of one length
    # have no padding. (float32 is not affected; BlockCert records such tokens as non-finite, never certified.)
    prompts = [f"prompt number {i:02d} of equal length" for i in range(6)] if variant.startswith("gemma3") else "stress"
    run = blockcert.extract(blockcert.load_model(str(family_models[variant]), "float64"), prompts)
    for c in run.certificates.values():
        assert c.metrics.max_relative_error <= 1e-15
        if variant != "phi3-fused":
            assert c.metrics.epsilon == 0.0


def test_qwen2_has_biases_on_q_k_v_but_not_o(family_models):
    native = NativeModel(blockcert.load_model(str(family_models["qwen2-bias"])))
    ts = native.extract_ir(0).tensors
    assert {"attn.q.bias", "attn.k.bias", "attn.v.bias"} <= set(ts) and "attn.o.bias" not in ts


def test_phi3_split_is_the_fused_matrix_exactly(family_models):
    lm = blockcert.load_model(str(family_models["phi3-fused"]))
    native = NativeModel(lm)
    ir, layer = native.extract_ir(1), native.layers[1]
    qkv = torch.cat([ir.tensors["attn.q.weight"], ir.tensors["attn.k.weight"], ir.tensors["attn.v.weight"]])
    assert torch.equal(qkv, layer.self_attn.qkv_proj.weight)
    gate_up = torch.cat([ir.tensors["mlp.gate.weight"], ir.tensors["mlp.up.weight"]])
    assert torch.equal(gate_up, layer.mlp.gate_up_proj.weight)


def test_gemma3_declares_its_sandwich_norms_window_and_qk_norm(family_models):
    native = NativeModel(blockcert.load_model(str(family_models["gemma3-window"])))
    local, full = native.extract_ir(0).spec, native.extract_ir(2).spec
    assert local.attention.window == 4 and full.attention.window is None  # local, local, global layers
    assert [op.weights for op in local.ops if op.op == "norm"] == ["attn_norm", "post_attn_norm", "mlp_norm",
                                                                   "post_mlp_norm"]
    assert local.attn_norm.unit_offset and local.attention.qk_norm is not None
    run = blockcert.extract(native.lm, "stress", blocks=[0])
    from safetensors.torch import load

    native_mask = load(run.files["block_000/traces.safetensors"])["native_mask"]
    t = native_mask.shape[-1]
    assert not bool(native_mask[0, t - 1, : t - 4].any())  # the window really masks the old keys
    assert run.certificates[0].metrics.cov_path == 1.0  # and the IR's declared mask is the native one


def test_gemma_blocks_get_trajectory_bounds_and_the_set_kinds_refuse_with_one_line(family_models, tmp_path, cli):
    """The Lipschitz (set) kinds have no rule for q/k norms, (1 + w) sandwich norms or windows: one line that
    names the kinds that do work; those (the trajectory certificates) then bound the run and verify."""
    run = blockcert.extract(str(family_models["gemma3-window"]), "default", surrogate="bf16", out=tmp_path / "g")
    res = cli("bound", run.path, "--model", str(family_models["gemma3-window"]))
    assert res.code != 0 and "--kinds pointwise,per_prompt,trajectory" in res.err and "Traceback" not in res.err
    assert len([line for line in res.err.splitlines() if line.strip()]) == 1
    res = cli("bound", run.path, "--model", str(family_models["gemma3-window"]), "--kinds",
              "pointwise,per_prompt,trajectory", "--no-plot")
    assert res.code == 0, res.err
    assert blockcert.verify(run.path)


@pytest.mark.parametrize("variant", list(FAMILIES))
def test_stitch_and_verify_work_and_a_tampered_weight_is_caught(family_models, variant, tmp_path):
    run = blockcert.extract(str(family_models[variant]), "default", surrogate="bf16", out=tmp_path / "run")
    result = blockcert.stitch(run, model=str(family_models[variant]))
    assert result.certificate.metrics.measured_deviation > 0
    assert blockcert.verify(run)
    from safetensors.torch import load_file, save_file

    path = tmp_path / "run" / "block_001" / "ir.safetensors"
    ts = load_file(path)
    ts["attn.o.weight"][0, 0] += 0.5
    save_file(ts, path)
    reseal(tmp_path / "run", 1)  # a forger re-hashes everything: only the replay can tell
    report = blockcert.verify(tmp_path / "run")
    assert not report and any("block 1: metrics.epsilon" in line for line in report.lines())
