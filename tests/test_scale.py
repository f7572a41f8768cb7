"""Extraction at its physical cost, and executors that give the same certificate bytes."""

from __future__ import annotations

import pytest
import torch

import blockcert
from blockcert.arch.native import NativeModel
from blockcert.errors import BlockCertError
from blockcert.workflows.executor import LocalExecutor, RayExecutor, executor_for


def _count_block_calls(monkeypatch) -> list[int]:
    calls = [0]
    real = NativeModel.block

    def counted(self, i, x, ctx):
        calls[0] += 1
        return real(self, i, x, ctx)

    monkeypatch.setattr(NativeModel, "block", counted)
    return calls


def test_an_exact_extraction_costs_one_forward_and_no_suffix(monkeypatch, toy_models):
    """Bit-identical surrogate outputs need no stitched suffix: their losses are the base losses exactly."""
    model = blockcert.load_model(str(toy_models["llama-gqa"]))
    calls = _count_block_calls(monkeypatch)
    run = blockcert.extract(model, "stress", blocks="all", batch_size=4)
    n_chunks = -(-run.summary.prompts.n_prompts // 4)
    assert calls[0] == model.num_layers * n_chunks  # exactly one native forward over the prompts
    assert all(c.metrics.cov_loss == 1.0 for c in run.certificates.values())


def test_a_surrogate_that_differs_pays_its_stitched_suffix(monkeypatch, toy_models):
    model = blockcert.load_model(str(toy_models["llama-gqa"]))
    calls = _count_block_calls(monkeypatch)
    run = blockcert.extract(model, "stress", blocks=[0], surrogate="bf16", batch_size=4)
    n_chunks = -(-run.summary.prompts.n_prompts // 4)
    assert calls[0] == (model.num_layers + model.num_layers - 1) * n_chunks  # forward + suffix of blocks 1..L-1
    assert run.certificates[0].metrics.epsilon > 0


def test_unknown_executor_is_one_line():
    with pytest.raises(BlockCertError, match="--executor 'spark' is not known; use one of local, ray"):
        executor_for("spark")
    assert isinstance(executor_for("local"), LocalExecutor)


def test_ray_executor_gives_byte_identical_certificates(toy_models):
    pytest.importorskip("ray")
    model = blockcert.load_model(str(toy_models["llama-gqa"]))
    local = blockcert.extract(model, "default", blocks="all", surrogate="bf16")
    ray_exec = RayExecutor(num_cpus=2)  # a local cluster with two worker processes, started here
    try:
        remote = blockcert.extract(model, "default", blocks="all", surrogate="bf16", executor=ray_exec)
    finally:
        ray_exec.shutdown()
    assert sorted(remote.files) == sorted(local.files)
    assert all(remote.files[k] == local.files[k] for k in local.files)  # every file, byte for byte


def _write_llama(out, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from blockcert.arch.toy import byte_tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=260, hidden_size=512, intermediate_size=2048, num_hidden_layers=layers,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
    LlamaForCausalLM(cfg).save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    return out


def _held_weight_bytes_at_each_block_call(monkeypatch, lm) -> list[int]:
    """Bytes of parameters materialised (not on the meta device) whenever a native block runs."""
    seen: list[int] = []
    real = NativeModel.block

    def watched(self, i, x, ctx):
        with self.materialized(i):
            seen.append(sum(p.numel() * p.element_size() for p in lm.model.parameters() if p.device.type != "meta"))
            return real(self, i, x, ctx)

    monkeypatch.setattr(NativeModel, "block", watched)
    return seen


@pytest.mark.parametrize("layers", [2, 6])
def test_streaming_holds_one_layer_whatever_the_number_of_layers(monkeypatch, tmp_path, layers):
    from blockcert.arch.loading import load_model

    lm = load_model(str(_write_llama(tmp_path / f"l{layers}", layers)), streaming=True)
    seen = _held_weight_bytes_at_each_block_call(monkeypatch, lm)
    run = blockcert.extract(lm, "default", blocks=[0, layers - 1], surrogate="bf16", batch_size=4)
    assert run.certificates[0].metrics.epsilon > 0
    layer = sum(p.numel() * 4 for p in lm.weights.layers[0].parameters())
    resident = sum(p.numel() * 4 for n, p in lm.model.named_parameters() if not n.startswith("model.layers."))
    assert max(seen) == resident + layer  # embeddings, norm, head and exactly one decoder layer, never more
    assert lm.weights.loads == 2 + layers  # two IR extractions, then one pass that reads each layer once


def test_streaming_gives_the_same_certificate_bytes(tmp_path):
    model_dir = _write_llama(tmp_path / "l3", 3)
    from blockcert.arch.loading import load_model

    eager, streamed = load_model(str(model_dir)), load_model(str(model_dir), streaming=True)
    assert streamed.weights_sha256 == eager.weights_sha256  # the fingerprint, one tensor at a time
    a = blockcert.extract(eager, "stress", blocks="all", surrogate="bf16")
    b = blockcert.extract(streamed, "stress", blocks="all", surrogate="bf16")
    assert all(a.files[k] == b.files[k] for k in a.files)
    assert streamed.weights.loads == 2 * streamed.num_layers  # IR extraction + one tracing pass, each layer once


def test_cuda_without_a_gpu_is_one_line(toy_models):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal path does not apply")
    with pytest.raises(BlockCertError, match="--device cuda was asked for but no CUDA device is available"):
        blockcert.load_model(str(toy_models["llama-gqa"]), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (CI has none)")
def test_cuda_certificates_agree_with_cpu_within_the_recorded_tolerance(toy_models):
    cpu = blockcert.extract(blockcert.load_model(str(toy_models["llama-gqa"])), "stress", surrogate="bf16")
    gpu = blockcert.extract(blockcert.load_model(str(toy_models["llama-gqa"]), device="cuda"), "stress",
                            surrogate="bf16")
    for i, c in cpu.certificates.items():
        g = gpu.certificates[i]
        assert abs(g.metrics.epsilon - c.metrics.epsilon) <= c.tolerances.replay_atol
        assert g.certified == c.certified
