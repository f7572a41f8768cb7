"""The Max-of-K study: soundness of the proofs against brute force, certificates, verify, Lean text, CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch
from typer.testing import CliRunner

from blockcert.cli.maxk import maxk_app as app
from blockcert.maxk import store
from blockcert.maxk.brute import brute_force, brute_force_reference
from blockcert.maxk.circuits import circuits, group_totals, groups
from blockcert.maxk.cubic import cubic_proof
from blockcert.maxk.lean import lean_module
from blockcert.maxk.model import model_from_state
from blockcert.maxk.rigor import IV
from blockcert.maxk.subcubic import subcubic_proof
from blockcert.maxk.train import TrainConfig, train
from blockcert.maxk.verify import verify_maxk

torch.set_num_threads(1)
SMALL = [(8, 3), (10, 4), (6, 5)]


@pytest.fixture(scope="module")
def trained():
    """Three seeds per small configuration, briefly trained (accuracy well below 1: a real test)."""
    return {(v, k, s): train(TrainConfig(d_vocab=v, k=k, steps=250), s).state for v, k in SMALL for s in range(3)}


@pytest.mark.parametrize("v,k", [(2, 2), (5, 3), (8, 3), (64, 4), (64, 5), (7, 10)])
def test_group_totals_partition_all_inputs(v, k):
    totals = group_totals(v, k)
    assert len(totals) == len(groups(v)) == v * (v + 1) // 2
    assert sum(totals) == v**k


def test_brute_force_matches_plain_forward_and_is_exact(trained):
    for (v, k, _s), state in trained.items():
        b = brute_force(circuits(state))
        assert sum(b["ambiguous"]) == 0
        assert sum(b["correct"]) == brute_force_reference(model_from_state(state), v, k)


def test_cubic_and_subcubic_are_sound_against_brute_force(trained):
    for (_v, _k, _s), state in trained.items():
        c = circuits(state)
        brute = brute_force(c)["correct"]
        for proven in (cubic_proof(c)["proven"], subcubic_proof(c, rank=1)["proven"],
                       subcubic_proof(c, rank=2, window=2)["proven"]):
            assert all(p <= b for p, b in zip(proven, brute, strict=True))
            assert sum(proven) <= sum(brute)


def test_proofs_are_not_vacuous_on_a_trained_model():
    state = train(TrainConfig(d_vocab=16, k=3, steps=1500), 0).state
    c = circuits(state)
    acc = sum(brute_force(c)["correct"]) / 16**3
    assert acc > 0.95
    assert sum(cubic_proof(c)["proven"]) / 16**3 > 0.5 * acc


@pytest.mark.parametrize("breakage", ["zero_ov", "permute_unembed"])
def test_broken_model_gets_a_low_bound(trained, breakage):
    state = dict(train(TrainConfig(d_vocab=16, k=3, steps=800), 1).state)
    if breakage == "zero_ov":
        state["W_O"] = torch.zeros_like(state["W_O"])
    else:
        state["W_U"] = state["W_U"][:, torch.randperm(16, generator=torch.Generator().manual_seed(0))].contiguous()
    c = circuits(state)
    total = 16**3
    brute = sum(brute_force(c)["correct"]) / total
    assert sum(cubic_proof(c)["proven"]) / total <= min(brute, 0.3)
    assert sum(subcubic_proof(c)["proven"]) / total <= min(brute, 0.3)


def test_interval_matmul_encloses_the_exact_product():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 7, generator=g), torch.randn(7, 4, generator=g) * 1e3
    prod = IV.exact(a) @ IV.exact(b)
    lo, hi = prod.lower(), prod.upper()
    for i in range(5):
        for j in range(4):
            exact = sum(Fraction(float(a[i, t])) * Fraction(float(b[t, j])) for t in range(7))
            assert Fraction(float(lo[i, j])) <= exact <= Fraction(float(hi[i, j]))


def test_training_is_deterministic(tmp_path):
    cfg = TrainConfig(d_vocab=8, k=3, steps=40)
    a, b = train(cfg, 7), train(cfg, 7)
    sha_a = store.save_weights(tmp_path / "a", a.state)
    sha_b = store.save_weights(tmp_path / "b", b.state)
    assert sha_a == sha_b
    assert (tmp_path / "a" / store.WEIGHTS).read_bytes() == (tmp_path / "b" / store.WEIGHTS).read_bytes()
    assert train(cfg, 8).state["W_E"].ne(a.state["W_E"]).any()


def _cli(*args):
    res = CliRunner().invoke(app, [str(x) for x in args])
    err = getattr(res, "stderr", "") or ""
    return res.exit_code, res.output, err


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("maxk") / "study"
    code, out, _ = _cli("train", "--seed", 1, "--k", 3, "--d-vocab", 8, "--steps", 300, "--out", d)
    assert code == 0, out
    for m in ("brute", "cubic", "subcubic"):
        code, out, _ = _cli("prove", d, "--method", m)
        assert code == 0, out
        assert "bound" in out and "FLOPs" in out
    return d


def test_certificates_verify_and_match_exact_arithmetic(study):
    assert verify_maxk(study) == []
    brute = store.load_certificate(study, "brute")
    for m in ("cubic", "subcubic"):
        c = store.load_certificate(study, m)
        assert Fraction(c.bound_num, c.bound_den) == Fraction(sum(c.proven), 8**3)
        assert c.bound_num <= brute.bound_num and c.accuracy_num == brute.bound_num
        assert c.accuracy_cert_digest == brute.digest and c.cost.flops > 0
    code, out, _ = _cli("verify", study)
    assert code == 0 and out.startswith("OK")
    lean = (study / "lean" / "MaxKCert" / "Cubic.lean").read_text()
    assert "theorem bound_le_accuracy : boundNum ≤ accuracyNum := by decide +kernel" in lean
    assert (study / "lean" / "lean-toolchain").read_text().startswith("leanprover/lean4:")


def _copy(study, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(study, d)
    return d


def test_tampered_per_case_count_is_rejected(study, tmp_path):
    d = _copy(study, tmp_path)
    p = d / "proof_cubic.json"
    raw = json.loads(p.read_text())
    i = next(i for i, (a, t) in enumerate(zip(raw["proven"], raw["group_totals"], strict=True)) if a < t)
    raw["proven"][i] += 1
    p.write_text(json.dumps(raw))
    problems = verify_maxk(d, recompute=False)
    assert any("digest" in x for x in problems) and any("bound_num" in x for x in problems)
    # a forger who also fixes the sum and re-seals is still caught (recomputation, brute force, Lean text)
    from blockcert.maxk.records import ProofCertificate

    raw["bound_num"] += 1
    raw["bound"] = raw["bound_num"] / raw["bound_den"]
    raw["normalised"] = raw["bound_num"] / raw["accuracy_num"]
    forged = ProofCertificate.model_validate({**raw, "digest": ""}).sealed()
    p.write_text(forged.model_dump_json())
    problems = verify_maxk(d)
    assert not any("digest" in x or "bound_num" in x for x in problems)
    assert any("re-running the proof" in x or "more proven sequences than brute force" in x for x in problems)


@pytest.mark.parametrize("damage", ["garbage_json", "truncated_weights", "wrong_schema", "missing_record"])
def test_hostile_files_give_one_line_problems(study, tmp_path, damage):
    d = _copy(study, tmp_path)
    if damage == "garbage_json":
        (d / "proof_subcubic.json").write_bytes(b"\xff{not json")
    elif damage == "truncated_weights":
        w = d / store.WEIGHTS
        w.write_bytes(w.read_bytes()[:50])
    elif damage == "wrong_schema":
        raw = json.loads((d / "proof_brute.json").read_text())
        raw["proven"] = "many"
        (d / "proof_brute.json").write_text(json.dumps(raw))
    else:
        (d / store.RECORD).unlink()
    problems = verify_maxk(d)
    assert problems and all("\n" not in x for x in problems)
    code, out, _ = _cli("verify", d)
    assert code != 0


def test_cli_bad_input_gives_one_error_line(tmp_path):
    for args in (("prove", tmp_path / "nope"), ("prove", tmp_path, "--method", "quartic"),
                 ("train", "--k", 1, "--out", tmp_path / "x"), ("prove", tmp_path)):
        code, out, err = _cli(*args)
        lines = [x for x in (out or err).splitlines() if x.startswith("error:")]
        assert code == 2 and len(lines) == 1, (args, out, err)


GOLDEN = """-- Generated by blockcert.maxk.lean from s/proof_cubic.json; do not edit.
-- Max-of-K accuracy lower bound, method cubic: d_vocab = 2, K = 2.
-- Groups: (query token, max token), max ascending then query ascending.
set_option maxRecDepth 100000

namespace MaxKCert.Cubic

def sumList (xs : List Nat) : Nat := xs.foldl (· + ·) 0

def allLe : List Nat → List Nat → Bool
  | [], [] => true
  | x :: xs, y :: ys => Nat.ble x y && allLe xs ys
  | _, _ => false

/-- Sequences in each group (exact combinatorics). -/
def totals : List Nat := [
    1, 1, 2
  ]

/-- Sequences proven correct in each group. -/
def proven : List Nat := [
    1, 0, 2
  ]

def boundNum : Nat := 3
def boundDen : Nat := 4

theorem den_eq : boundDen = 2 ^ 2 := by decide +kernel

theorem totals_sum : sumList totals = boundDen := by decide +kernel

theorem proven_sum : sumList proven = boundNum := by decide +kernel

theorem proven_le_totals : allLe proven totals = true := by decide +kernel

theorem bound_le_one : boundNum ≤ boundDen := by decide +kernel

/-- Sequences the brute-force enumeration found certainly correct, per group. -/
def bruteCorrect : List Nat := [
    1, 1, 2
  ]

def accuracyNum : Nat := 4

theorem brute_sum : sumList bruteCorrect = accuracyNum := by decide +kernel

theorem proven_le_brute : allLe proven bruteCorrect = true := by decide +kernel

/-- bound = boundNum / boundDen ≤ accuracyNum / boundDen = brute-force accuracy. -/
theorem bound_le_accuracy : boundNum ≤ accuracyNum := by decide +kernel

end MaxKCert.Cubic
"""


def test_lean_module_golden():
    totals = group_totals(2, 2)
    assert totals == [1, 1, 2]
    assert lean_module("cubic", 2, 2, totals, [1, 0, 2], 3, [1, 1, 2], 4, "s/proof_cubic.json") == GOLDEN


def test_resealed_lowered_count_is_caught_by_recomputation(study, tmp_path):
    from blockcert.maxk.records import ProofCertificate

    d = _copy(study, tmp_path)
    p = d / "proof_subcubic.json"
    raw = json.loads(p.read_text())
    i = next(i for i, a in enumerate(raw["proven"]) if a > 0)
    raw["proven"][i] -= 1
    raw["bound_num"] -= 1
    raw["bound"] = raw["bound_num"] / raw["bound_den"]
    raw["normalised"] = raw["bound_num"] / raw["accuracy_num"]
    p.write_text(ProofCertificate.model_validate({**raw, "digest": ""}).sealed().model_dump_json())
    problems = verify_maxk(d)
    assert any("re-running the proof" in x for x in problems)
    assert any("lean" in x.lower() for x in problems)
