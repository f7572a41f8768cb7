"""Extraction writes complete, deterministic, formula-exact certificates."""

from __future__ import annotations

import contextlib
import json

import torch

from blockcert.core.metrics import Policy, Thresholds, block_metrics, verdict
from blockcert.core.selection import parse_blocks
from blockcert.core.traces import LossTrace
from blockcert.records.certificate import BlockCertificate
from blockcert.store import layout
from blockcert.store.tensors import load_record
from blockcert.workflows.extract import ExtractOptions, run_extract


def test_run_directory_layout(toy_run):
    summary = json.loads((toy_run / "summary.json").read_text())
    assert [b["index"] for b in summary["blocks"]] == [0, 1, 2]
    assert summary["all_certified"] is True
    for b in summary["blocks"]:
        bdir = toy_run / f"block_{b['index']:03d}"
        for name in ("ir.json", "ir.safetensors", "traces.safetensors", "losses.safetensors", "metrics.json",
                     "certificate.json"):
            assert (bdir / name).is_file(), name
        cert = BlockCertificate.model_validate_json((bdir / "certificate.json").read_text())
        assert cert.digest == cert.body_digest() == b["digest"]
        assert set(cert.artifacts) >= {f"block_{b['index']:03d}/ir.safetensors", "prompts.json"}
        per_prompt = json.loads((bdir / "metrics.json").read_text())["per_prompt"]
        assert len(per_prompt) == 10 and sum(p["n_tokens"] for p in per_prompt) == cert.metrics.n_tokens


def test_same_inputs_give_byte_identical_certificates(toy_models, tmp_path):
    opts = dict(model=str(toy_models["gpt2"]), prompts="default", blocks="0,2")
    a = run_extract(ExtractOptions(**opts, out=tmp_path / "a"))
    b = run_extract(ExtractOptions(**opts, out=tmp_path / "b"))
    assert a == b
    for i in (0, 2):
        ca = (layout.block_dir(tmp_path / "a", i) / "certificate.json").read_bytes()
        cb = (layout.block_dir(tmp_path / "b", i) / "certificate.json").read_bytes()
        assert ca == cb
    assert (tmp_path / "a/summary.json").read_bytes() == (tmp_path / "b/summary.json").read_bytes()


def test_loss_coverage_is_baseline_loss_weighted_eq8():
    base = torch.tensor([[2.0, 1.0, 4.0, 0.5]], dtype=torch.float64)
    stitched = base + torch.tensor([[0.0, 0.01, 0.0005, float("nan")]], dtype=torch.float64)
    ok = torch.tensor([[True, True, True, False]])
    valid = torch.ones(1, 5, dtype=torch.bool)
    errors = torch.tensor([[0.0, 0.02, 0.005, 0.001, 0.003]], dtype=torch.float64)
    m = block_metrics(errors, torch.ones(1, 5, dtype=torch.float64), valid, torch.ones(1, 5, dtype=torch.bool),
                      base, stitched, ok, Thresholds(tau_act=0.01, tau_loss=0.001))
    assert m.epsilon == 0.02 and abs(m.mae - 0.0058) < 1e-15
    assert m.act_covered == 4 and m.cov_act == 0.8
    # tokens 0 and 2 are within τ_loss; token 1 is not; token 3 has no next token
    assert m.loss_covered_weight == 6.0 and m.loss_total_weight == 7.0 and m.cov_loss == 6.0 / 7.0
    ok_, reasons = verdict(m, Policy(alpha_act=0.94, alpha_loss=0.9))
    assert not ok_ and len(reasons) == 2


def test_recorded_losses_are_the_stitched_model_losses(toy_run):
    """Exact-copy surrogates: the stitched model's per-token NLL equals the baseline's."""
    loss = load_record(toy_run / "block_001" / "losses.safetensors", LossTrace)
    assert torch.equal(loss.base_nll[loss.loss_ok], loss.stitched_nll[loss.loss_ok])
    assert bool((loss.base_nll[loss.loss_ok] > 0).all())


def test_bf16_surrogate_fails_the_default_policy(toy_models, tmp_path):
    s = run_extract(ExtractOptions(str(toy_models["llama-gqa"]), "stress", "0", tmp_path / "q", surrogate="bf16",
                                   thresholds=Thresholds(tau_act=1e-6)))
    b = s.blocks[0]
    assert b.epsilon > 0 and b.cov_act < 0.94 and not b.certified and not s.all_certified


def test_interrupted_run_leaves_no_valid_certificate_and_rerun_completes(toy_models, tmp_path, monkeypatch):
    import blockcert.workflows.extract as ex

    out = tmp_path / "r"
    opts = ExtractOptions(str(toy_models["llama-mha"]), "default", "all", out)
    real = ex._certify_block
    calls = {"n": 0}

    def crash_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ex, "_certify_block", crash_on_second)
    with contextlib.suppress(KeyboardInterrupt):
        run_extract(opts)
    # The run is certified in memory and saved verdicts-last, so an interrupted extract leaves no file that
    # could pass for a certificate (and removes the output directory it created).
    assert not out.exists() or not list(out.rglob("certificate.json")) and not (out / "summary.json").exists()
    from blockcert.verifier.run import verify_run

    monkeypatch.setattr(ex, "_certify_block", real)
    run_extract(opts)
    assert verify_run(out).ok


def test_parse_blocks():
    assert parse_blocks("all", 4) == [0, 1, 2, 3]
    assert parse_blocks("3,0, 1", 4) == [0, 1, 3]
    assert parse_blocks("1-3", 4) == [1, 2, 3]


def test_measuring_while_tracing_gives_the_bytes_of_a_replay_on_the_same_chunks(toy_models):
    """extract measures each surrogate in the tracing pass, on the native chunks, instead of replaying it again;
    with --trace-dtype equal to the model's dtype it replays the stored traces (the old path). Both must give
    the same metrics, bit for bit, over several chunks (10 prompts, 3 at a time) and lossy surrogates."""
    import blockcert

    lm = blockcert.load_model(str(toy_models["llama-gqa"]))
    for kind in ("bf16", "lowrank:8", "exact"):
        traced = blockcert.extract(lm, "stress", blocks="all", surrogate=kind, batch_size=3)
        replayed = blockcert.extract(lm, "stress", blocks="all", surrogate=kind, batch_size=3, trace_dtype="float32")
        for i in traced.certificates:
            rel = f"block_{i:03d}/{layout.METRICS}"
            assert traced.files[rel] == replayed.files[rel], (kind, i)
        if kind != "exact":
            assert any(c.metrics.epsilon > 0 for c in traced.certificates.values())
