"""`blockcert stitch` and the full-model certificate: measured deviations, perplexity, verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from blockcert.records.fullmodel import (
    CERTIFICATE_FILE,
    EVALUATION_FILE,
    FullModelCertificate,
    FullModelEvaluation,
    FullModelPolicy,
    global_metrics,
)
from blockcert.store.files import sha256_file
from blockcert.verifier.run import verify_run
from blockcert.workflows.extract import ExtractOptions, run_extract
from blockcert.workflows.stitch import StitchOptions, run_stitch
from tests._forge import reseal, reseal_manifest

from ._smollm2 import needs_smollm2, stitched_smollm2


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _reseal_block(run: Path, i: int) -> None:
    """Re-hash block i's artifacts into its certificate and re-seal the manifest, as a forger (or a careless
    re-save) would after changing its surrogate: stitch then accepts the surrogate as certified."""
    reseal(run, i)


def _corrupt_surrogate(run: Path, i: int, scale: float = 3.0) -> None:
    from safetensors.torch import load_file, save_file

    path = run / f"block_{i:03d}" / "ir.safetensors"
    ts = load_file(path)
    ts["mlp.down.weight"] = ts["mlp.down.weight"] * scale
    save_file(ts, path)


def _problems(run: Path, model: str | None = None) -> str:
    rep = verify_run(run, model)
    assert not rep.ok
    return "\n".join(rep.lines())


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, toy_models) -> Path:
    """All blocks of the GQA toy as bf16-rounded surrogates: small but non-zero errors everywhere."""
    out = tmp_path_factory.mktemp("bf16") / "run"
    run_extract(ExtractOptions(str(toy_models["llama-gqa"]), "stress", "all", out, surrogate="bf16"))
    return out


@pytest.fixture(scope="module")
def stitched_bf16(bf16_run, toy_models, tmp_path_factory) -> Path:
    run = _copy(bf16_run, tmp_path_factory.mktemp("stitched") / "run")
    run_stitch(StitchOptions(run, model=str(toy_models["llama-gqa"])))
    return run


def _load(run: Path) -> tuple[FullModelEvaluation, FullModelCertificate]:
    ev = FullModelEvaluation.model_validate_json((run / EVALUATION_FILE).read_text())
    cert = FullModelCertificate.model_validate_json((run / CERTIFICATE_FILE).read_text())
    return ev, cert


def test_exact_surrogates_stitch_bit_for_bit(run_copy, toy_models):
    res = run_stitch(StitchOptions(run_copy, model=str(toy_models["llama-gqa"])))
    m, ev = res.certificate.metrics, res.evaluation
    assert len(ev.layers) == 3 and all(la.stitched for la in ev.layers)
    assert all(la.mae == 0.0 and la.max_token_error == 0.0 for la in ev.layers)
    assert m.measured_deviation == 0.0 and m.max_residual_error == 0.0
    assert m.baseline_ppl == m.stitched_ppl and m.delta_ppl == 0.0 and m.relative_delta_ppl == 0.0
    assert m.next_token_agreement == 1.0 and m.next_token_positions == m.n_tokens
    assert res.certificate.certified and res.certificate.reasons == ()
    assert verify_run(run_copy).ok


def test_quantized_surrogates_give_measured_nonzero_deviations(stitched_bf16):
    ev, cert = _load(stitched_bf16)
    m = cert.metrics
    assert [la.layer for la in ev.layers] == [0, 1, 2]
    assert all(la.mae > 0 and la.max_token_error >= la.mae and la.mean_abs > 0 for la in ev.layers)
    assert m.measured_deviation == ev.layers[-1].max_token_error > 0
    assert m.max_residual_error == max(la.max_token_error for la in ev.layers)
    assert m.worst_layer_mae == max(la.mae for la in ev.layers)
    assert 0 < m.relative_delta_ppl == pytest.approx(abs(m.stitched_ppl - m.baseline_ppl) / m.baseline_ppl)
    assert m.max_abs_loss_delta > 0 and m.next_token_agreement < 1.0
    assert cert.evaluation_sha256 == sha256_file(stitched_bf16 / EVALUATION_FILE)
    summary = json.loads((stitched_bf16 / "summary.json").read_text())
    refs = [(r.index, r.digest) for r in cert.block_certificates]
    assert refs == [(b["index"], b["digest"]) for b in summary["blocks"]]
    assert not cert.certified  # the bf16 blocks themselves fail the block policy (τ_act = 1e-2)
    assert global_metrics(ev.layers, ev.per_prompt) == m == ev.metrics


def test_perplexity_is_exp_of_the_mean_token_loss(stitched_bf16):
    ev, cert = _load(stitched_bf16)
    base = torch.tensor([v for p in ev.per_prompt for v in p.baseline_nll], dtype=torch.float64)
    stit = torch.tensor([v for p in ev.per_prompt for v in p.stitched_nll], dtype=torch.float64)
    assert cert.metrics.baseline_ppl == pytest.approx(float(base.mean().exp()), rel=1e-12)
    assert cert.metrics.stitched_ppl == pytest.approx(float(stit.mean().exp()), rel=1e-12)
    assert cert.metrics.n_loss_tokens == base.numel() == cert.metrics.n_tokens - cert.metrics.n_prompts


def test_stitching_one_block_leaves_earlier_layers_untouched(bf16_run, toy_models, tmp_path):
    run = _copy(bf16_run, tmp_path / "run")
    res = run_stitch(StitchOptions(run, blocks="1", model=str(toy_models["llama-gqa"])))
    maes = [la.mae for la in res.evaluation.layers]
    assert maes[0] == 0.0 and maes[1] > 0 and maes[2] > 0
    assert [la.stitched for la in res.evaluation.layers] == [False, True, False]
    assert res.certificate.stitched_blocks == (1,) and len(res.certificate.block_certificates) == 1


def test_corrupted_surrogate_raises_the_mae_from_its_layer_on_and_flips_the_verdict(run_copy, toy_models):
    model = str(toy_models["llama-gqa"])
    clean = run_stitch(StitchOptions(run_copy, model=model))
    assert clean.certificate.certified
    _corrupt_surrogate(run_copy, 1)
    _reseal_block(run_copy, 1)
    bad = run_stitch(StitchOptions(run_copy, model=model))
    before = [la.mae for la in clean.evaluation.layers]
    after = [la.mae for la in bad.evaluation.layers]
    assert before == [0.0, 0.0, 0.0]
    assert after[0] == 0.0 and after[1] > 0.1 and after[2] > 0.1
    assert bad.certificate.metrics.measured_deviation > 0.1
    assert not bad.certificate.certified
    assert any("|ΔPPL|/PPL" in r or "next-token agreement" in r for r in bad.certificate.reasons)
    # The block certificate still carries ε = 0 for a surrogate that is now far off: verify catches it.
    assert "block 1: metrics.epsilon" in _problems(run_copy)


def test_non_finite_stitched_stream_is_recorded_and_never_certified(run_copy, toy_models):
    _corrupt_surrogate(run_copy, 1, scale=float("inf"))
    _reseal_block(run_copy, 1)
    res = run_stitch(StitchOptions(run_copy, model=str(toy_models["llama-gqa"])))
    m, layers = res.certificate.metrics, res.evaluation.layers
    assert layers[0].mae == 0.0 and layers[1].mae is None and layers[2].mae is None
    assert m.nonfinite > 0 and m.measured_deviation is None and m.mean_layer_mae is None
    assert not res.certificate.certified and "non-finite deviations or losses" in res.certificate.reasons[0]
    full_model_lines = [line for line in verify_run(run_copy).lines() if "full_model" in line]
    assert full_model_lines == []  # recorded honestly: the arithmetic of the None entries checks out


def test_changed_surrogate_is_refused_without_writing(run_copy, toy_models, cli):
    _corrupt_surrogate(run_copy, 2)
    r = cli("stitch", run_copy, "--model", toy_models["llama-gqa"])
    assert r.code == 1
    assert _errors(r.err) == [
        "error: block 2: block_002/ir.safetensors changed since certification (SHA-256 mismatch); "
        "run `blockcert verify` on the run directory to see everything that is wrong"
    ]
    assert not (run_copy / CERTIFICATE_FILE).exists() and not (run_copy / EVALUATION_FILE).exists()


def test_policy_is_recorded_and_applied(bf16_run, toy_models, tmp_path):
    run = _copy(bf16_run, tmp_path / "run")
    lax = FullModelPolicy(max_relative_delta_ppl=1.0, min_next_token_agreement=0.5, require_certified_blocks=False)
    res = run_stitch(StitchOptions(run, model=str(toy_models["llama-gqa"]), policy=lax))
    assert res.certificate.certified and res.certificate.policy == lax
    assert verify_run(run).ok


def test_stitched_run_verifies_with_and_without_the_model(stitched_bf16, toy_models, cli):
    assert verify_run(stitched_bf16).ok
    r = cli("verify", stitched_bf16, "--model", toy_models["llama-gqa"])
    assert r.code == 0, r.err


def test_edited_full_model_certificate_is_caught(stitched_bf16, tmp_path, cli):
    run = _copy(stitched_bf16, tmp_path / "run")
    d = json.loads((run / CERTIFICATE_FILE).read_text())
    d["metrics"]["stitched_ppl"] = d["metrics"]["baseline_ppl"]
    (run / CERTIFICATE_FILE).write_text(json.dumps(d))
    r = cli("verify", run)
    assert r.code == 1
    assert "FAIL full_model_certificate.json: digest does not match its contents (edited?)" in r.err.splitlines()


def test_resealed_full_model_metrics_are_recomputed_and_caught(stitched_bf16, tmp_path):
    run = _copy(stitched_bf16, tmp_path / "run")
    cert = FullModelCertificate.model_validate_json((run / CERTIFICATE_FILE).read_text())
    forged = cert.metrics.model_copy(update={"relative_delta_ppl": 0.0, "next_token_agreement": 1.0})
    (run / CERTIFICATE_FILE).write_text(cert.model_copy(update={"metrics": forged}).sealed().model_dump_json())
    assert "full_model_certificate.json: metrics are not what the evaluation file's data give" in _problems(run)


def test_resealed_flipped_full_model_verdict_is_caught(stitched_bf16, tmp_path):
    run = _copy(stitched_bf16, tmp_path / "run")
    cert = FullModelCertificate.model_validate_json((run / CERTIFICATE_FILE).read_text())
    (run / CERTIFICATE_FILE).write_text(cert.model_copy(update={"certified": True}).sealed().model_dump_json())
    assert "says certified=True but its metrics and policy give False" in _problems(run)


def test_edited_evaluation_file_is_caught(stitched_bf16, tmp_path):
    run = _copy(stitched_bf16, tmp_path / "run")
    d = json.loads((run / EVALUATION_FILE).read_text())
    d["per_prompt"][0]["stitched_nll"][0] += 1e-3
    (run / EVALUATION_FILE).write_text(json.dumps(d))
    assert f"{EVALUATION_FILE}: SHA-256 mismatch" in _problems(run)


def test_consistently_forged_evaluation_passes_alone_but_fails_against_the_model(stitched_bf16, tmp_path, toy_models):
    """A forger who edits the per-layer data and re-derives every hash and digest defeats the
    arithmetic checks; only re-running the model exposes it."""
    run = _copy(stitched_bf16, tmp_path / "run")
    ev, cert = _load(run)
    layers = tuple(la.model_copy(update={"mae": la.mae / 10}) for la in ev.layers)
    m = global_metrics(layers, ev.per_prompt)
    (run / EVALUATION_FILE).write_text(ev.model_copy(update={"layers": layers, "metrics": m}).model_dump_json())
    forged = cert.model_copy(update={"metrics": m, "evaluation_sha256": sha256_file(run / EVALUATION_FILE)}).sealed()
    (run / CERTIFICATE_FILE).write_text(forged.model_dump_json())
    reseal_manifest(run)  # sealing needs no secret: the forger re-seals the manifest over the new files
    assert verify_run(run).ok
    assert "layer 0: mae recorded" in _problems(run, str(toy_models["llama-gqa"]))


def test_forged_token_split_between_prompts_is_caught(stitched_bf16, tmp_path):
    run = _copy(stitched_bf16, tmp_path / "run")
    ev, cert = _load(run)
    p0, p1 = ev.per_prompt[0], ev.per_prompt[1]
    moved = (
        p0.model_copy(
            update={
                "n_tokens": p0.n_tokens - 1,
                "baseline_nll": p0.baseline_nll[:-1],
                "stitched_nll": p0.stitched_nll[:-1],
                "baseline_next": p0.baseline_next[:-1],
                "stitched_next": p0.stitched_next[:-1],
            }
        ),
        p1.model_copy(
            update={
                "n_tokens": p1.n_tokens + 1,
                "baseline_nll": p1.baseline_nll + (1.0,),
                "stitched_nll": p1.stitched_nll + (1.0,),
                "baseline_next": p1.baseline_next + (0,),
                "stitched_next": p1.stitched_next + (0,),
            }
        ),
    )
    per_prompt = moved + ev.per_prompt[2:]
    m = global_metrics(ev.layers, per_prompt)
    (run / EVALUATION_FILE).write_text(ev.model_copy(update={"per_prompt": per_prompt, "metrics": m}).model_dump_json())
    forged = cert.model_copy(update={"metrics": m, "evaluation_sha256": sha256_file(run / EVALUATION_FILE)})
    (run / CERTIFICATE_FILE).write_text(forged.sealed().model_dump_json())
    assert "per-prompt token counts differ from those of prompts.json" in _problems(run)


def test_referenced_block_certificate_change_is_caught(stitched_bf16, tmp_path):
    run = _copy(stitched_bf16, tmp_path / "run")
    _reseal_block(run, 0)  # same content, so same digest: nothing to catch
    assert verify_run(run).ok
    _corrupt_surrogate(run, 0)
    _reseal_block(run, 0)
    assert "full_model_certificate.json: block 0: certificate digest differs from summary.json's" in _problems(run)


def test_evaluation_without_certificate_reads_as_interrupted(stitched_bf16, tmp_path):
    run = _copy(stitched_bf16, tmp_path / "run")
    (run / CERTIFICATE_FILE).unlink()
    assert "an interrupted stitch" in _problems(run)


# ---------------------------------------------------------------- bad input


def _snapshot(run: Path) -> dict[str, str]:
    return {p.relative_to(run).as_posix(): sha256_file(p) for p in sorted(run.rglob("*")) if p.is_file()}


def test_blocks_without_surrogates_are_refused(bf16_run, toy_models, tmp_path, cli):
    run = tmp_path / "run"
    run_extract(ExtractOptions(str(toy_models["llama-gqa"]), "default", "0", run))
    before = _snapshot(run)
    r = cli("stitch", run, "--blocks", "1-2", "--model", toy_models["llama-gqa"])
    assert r.code == 1
    assert _errors(r.err) == [
        "error: the run holds no surrogate for block(s) 1-2 (it has 0); "
        "extract them first: blockcert extract --blocks 1-2"
    ]
    assert _snapshot(run) == before


def test_surrogates_from_a_different_model_are_refused(bf16_run, tmp_path, cli):
    from blockcert.arch.toy import build_toy_model

    other = build_toy_model("llama-gqa", tmp_path / "other", seed=1)
    run = _copy(bf16_run, tmp_path / "run")
    before = _snapshot(run)
    r = cli("stitch", run, "--model", other)
    assert r.code == 1
    (line,) = _errors(r.err)
    assert "but the run's surrogates were extracted from weights" in line and "not the same model" in line
    assert _snapshot(run) == before


def test_a_different_prompt_set_is_refused(bf16_run, toy_models, tmp_path, cli):
    run = _copy(bf16_run, tmp_path / "run")
    before = _snapshot(run)
    r = cli("stitch", run, "--prompts", "default", "--model", toy_models["llama-gqa"])
    assert r.code == 1
    (line,) = _errors(r.err)
    assert "prompt set 'default' (4 prompts) is not the one the run was certified on ('stress', 10 prompts)" in line
    assert _snapshot(run) == before
    r = cli("stitch", run, "--prompts", "stress", "--model", toy_models["llama-gqa"])
    assert r.code == 0, r.err  # the certified set, named explicitly, is fine


def test_not_a_run_directory(cli, tmp_path):
    r = cli("stitch", tmp_path)
    assert r.code == 1
    assert _errors(r.err) == [
        f"error: {tmp_path} holds no summary.json: not a complete run; run `blockcert extract` first"
    ]


def test_model_the_run_records_but_cannot_be_found(bf16_run, tmp_path, cli, monkeypatch):
    run = _copy(bf16_run, tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # the toy model's recorded name is a bare directory name, not found here
    r = cli("stitch", run)
    assert r.code == 1
    (line,) = _errors(r.err)
    assert line.endswith("(the run records model 'llama-gqa'; pass --model)")


def test_bad_policy_option(bf16_run, cli):
    r = cli("stitch", bf16_run, "--min-agreement", "2")
    assert r.code == 1 and len(_errors(r.err)) == 1 and "min_next_token_agreement" in r.err


def test_cli_prints_the_report(bf16_run, toy_models, tmp_path, cli):
    run = _copy(bf16_run, tmp_path / "run")
    r = cli("stitch", run, "--model", toy_models["llama-gqa"])
    assert r.code == 0, r.err
    assert "| layer | stitched | MAE ‖x̂−x‖ | max ‖x̂−x‖ | mean |x̂−x| |" in r.out
    assert "- measured deviation max ‖x̂_L − x_L‖₂ (final residual):" in r.out
    assert "- verdict: NOT certified (block certificate(s) 0-2 not certified" in r.out


# ---------------------------------------------------------------- the bundled model


@needs_smollm2
def test_smollm2_fully_stitched_matches_perplexity(tmp_path_factory):
    """All 30 blocks of smollm2-135m stitched on the stress prompts: the issue's |ΔPPL|/PPL ≤ 1e-6 (float32)."""
    run, res = stitched_smollm2(tmp_path_factory)
    m = res.certificate.metrics
    assert len(res.evaluation.layers) == 30 and res.certificate.stitched_blocks == tuple(range(30))
    assert m.relative_delta_ppl <= 1e-6
    assert m.next_token_agreement == 1.0
    assert res.certificate.certified
    assert verify_run(run).ok
