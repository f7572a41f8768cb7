"""`blockcert semantic`: fidelity vs absolute correctness on the bundled 30-prompt probe (paper §6.7)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from blockcert.arch.probe import answer_text, label_first_token
from blockcert.records.fullmodel import CERTIFICATE_FILE, SEMANTIC_FILE, FullModelCertificate
from blockcert.records.semantic import LABELLING, SemanticItem, is_correct, semantic_metrics
from blockcert.store.files import sha256_file
from blockcert.store.probe import load_probe
from blockcert.verifier.run import verify_run
from blockcert.workflows.semantic import run_semantic
from blockcert.workflows.stitch import StitchOptions, run_stitch

from ._smollm2 import needs_smollm2, stitched_smollm2


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _item(k: int, label_token: str, base: tuple[int, str], stit: tuple[int, str]) -> SemanticItem:
    return SemanticItem(
        index=k,
        category="fact",
        prompt=f"p{k}",
        label="x",
        label_token=label_token,
        baseline_token=base[0],
        baseline_answer=base[1],
        stitched_token=stit[0],
        stitched_answer=stit[1],
    )


def test_bundled_probe_is_thirty_human_labelled_prompts():
    probe = load_probe()
    assert len(probe.items) == 30 and probe.labelling == LABELLING
    assert Counter(i.category for i in probe.items) == {"arithmetic": 10, "fact": 10, "yes/no": 10}
    assert all(i.prompt and i.label.strip() for i in probe.items)
    assert len({i.prompt for i in probe.items}) == 30
    assert probe.sha256 == load_probe().sha256


def test_labelling_convention_on_a_byte_tokenizer():
    from blockcert.arch.toy import byte_tokenizer

    tok = byte_tokenizer()
    assert label_first_token(tok, "Paris") == "p"  # " Paris" -> " ", "P", ...: whitespace-only tokens skipped
    assert answer_text(tok, tok(" ")["input_ids"][0]) == ""
    assert not is_correct("", "")  # an empty answer is never right, even against an empty label token


def test_semantic_metrics_keep_fidelity_and_correctness_apart():
    items = (
        _item(0, "paris", (1, "paris"), (1, "paris")),  # both right, agree
        _item(1, "5", (2, "4"), (2, "4")),  # both wrong, agree: faithful, not correct
        _item(2, "yes", (3, "yes"), (4, "no")),  # stitched drifts from a right baseline
    )
    m = semantic_metrics(items)
    assert (m.n_prompts, m.fidelity_agreed, m.baseline_correct, m.stitched_correct) == (3, 2, 2, 1)
    assert m.fidelity == pytest.approx(2 / 3) and m.baseline_accuracy == pytest.approx(2 / 3)
    assert m.stitched_accuracy == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def probed(toy_run, toy_models, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("semantic") / "run"
    shutil.copytree(toy_run, run)
    run_stitch(StitchOptions(run, model=str(toy_models["llama-gqa"])))
    run_semantic(run, model=str(toy_models["llama-gqa"]))
    return run


def test_semantic_result_is_recorded_in_the_full_model_certificate(probed):
    cert = FullModelCertificate.model_validate_json((probed / CERTIFICATE_FILE).read_text())
    ev = json.loads((probed / SEMANTIC_FILE).read_text())
    rec = cert.semantic
    assert rec is not None and rec.file == SEMANTIC_FILE and rec.labelling == LABELLING
    assert rec.file_sha256 == sha256_file(probed / SEMANTIC_FILE)
    assert rec.probe_sha256 == load_probe().sha256 and len(ev["items"]) == 30
    assert rec.metrics.fidelity == 1.0  # exact-copy surrogates: the stitched model is the baseline
    assert rec.metrics.baseline_correct == rec.metrics.stitched_correct
    assert cert.body_digest() == cert.digest
    assert verify_run(probed).ok


def test_semantic_result_verifies_against_the_model(probed, toy_models):
    rep = verify_run(probed, str(toy_models["llama-gqa"]))
    assert rep.ok, rep.lines()


def test_edited_semantic_file_is_caught(probed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(probed, run)
    d = json.loads((run / SEMANTIC_FILE).read_text())
    d["items"][0]["stitched_answer"] = d["items"][0]["label_token"]
    (run / SEMANTIC_FILE).write_text(json.dumps(d))
    rep = verify_run(run)
    assert not rep.ok and any(f"{SEMANTIC_FILE}: SHA-256 mismatch" in line for line in rep.lines())


def test_resealed_semantic_accuracy_is_recomputed_and_caught(probed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(probed, run)
    cert = FullModelCertificate.model_validate_json((run / CERTIFICATE_FILE).read_text())
    m = cert.semantic.metrics.model_copy(update={"stitched_accuracy": 1.0, "stitched_correct": 30})
    forged = cert.model_copy(update={"semantic": cert.semantic.model_copy(update={"metrics": m})}).sealed()
    (run / CERTIFICATE_FILE).write_text(forged.model_dump_json())
    rep = verify_run(run)
    assert any("fidelity or accuracy is not what the recorded answers give" in line for line in rep.lines())


def test_restitching_drops_the_stale_semantic_result(probed, toy_models, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(probed, run)
    res = run_stitch(StitchOptions(run, model=str(toy_models["llama-gqa"])))
    assert res.certificate.semantic is None and not (run / SEMANTIC_FILE).exists()
    assert verify_run(run).ok


def test_semantic_needs_a_full_model_certificate(run_copy, toy_models, cli):
    r = cli("semantic", run_copy, "--model", toy_models["llama-gqa"])
    assert r.code == 1
    assert _errors(r.err) == [f"error: {run_copy} holds no {CERTIFICATE_FILE}; run `blockcert stitch` first"]
    assert not (run_copy / SEMANTIC_FILE).exists()


def test_custom_probe_file_and_bad_ones(probed, toy_models, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(probed, run)
    probe = tmp_path / "probe.json"
    items = [{"category": "fact", "prompt": "The capital of France is", "label": "Paris"}]
    probe.write_text(json.dumps({"name": "one", "description": "d", "labelling": LABELLING, "items": items}))
    r = cli("semantic", run, "--model", toy_models["llama-gqa"], "--probe", probe)
    assert r.code == 0, r.err
    assert "- fidelity (stitched == baseline): 1/1 (1.000)" in r.out
    assert verify_run(run).ok
    probe.write_text(json.dumps({"name": "x", "description": "d", "labelling": "other", "items": items}))
    before = sha256_file(run / CERTIFICATE_FILE)
    r = cli("semantic", run, "--model", toy_models["llama-gqa"], "--probe", probe)
    assert r.code == 1 and len(_errors(r.err)) == 1 and "labelling" in r.err
    assert sha256_file(run / CERTIFICATE_FILE) == before


@needs_smollm2
def test_smollm2_probe_labels_and_fidelity(tmp_path_factory):
    """The real model: labels tokenise as documented, the exact stitch is perfectly faithful, and the
    baseline's answers are sensible where a 135M model can be (simple facts)."""
    run, _ = stitched_smollm2(tmp_path_factory)
    res = run_semantic(run)
    from blockcert.arch.loading import load_model

    tok = load_model("smollm2-135m").tokenizer
    assert label_first_token(tok, "12") == "1" and label_first_token(tok, "Paris") == "paris"
    m = res.evaluation.metrics
    assert m.fidelity == 1.0 and m.baseline_correct == m.stitched_correct
    facts = [i for i in res.evaluation.items if i.category == "fact"]
    assert sum(is_correct(i.baseline_answer, i.label_token) for i in facts) >= 7
    assert all(i.baseline_answer for i in res.evaluation.items)  # a word or digit, never bare whitespace
    assert verify_run(run).ok
