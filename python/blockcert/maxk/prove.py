"""Train and prove, end to end: the glue between the pure-math modules and `store` (no printing)."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import torch

from blockcert.errors import BlockCertError
from blockcert.maxk import cost, store
from blockcert.maxk.brute import brute_force
from blockcert.maxk.circuits import circuits, group_totals
from blockcert.maxk.cubic import cubic_proof
from blockcert.maxk.lean import lean_module
from blockcert.maxk.records import Cost, ProofCertificate, TrainConfigRecord, TrainRecord
from blockcert.maxk.subcubic import subcubic_proof
from blockcert.maxk.train import TrainConfig, train
from blockcert.store.files import ensure_writable_dir

TIE = "correct iff the max token's logit is strictly above every other logit (ties count as wrong)"


def run_train(out: Path, seed: int, cfg: TrainConfig) -> TrainRecord:

    ensure_writable_dir(out)
    for m in store.METHODS:
        store.remove_certificate(out, m)
    t0 = time.perf_counter()
    try:
        res = train(cfg, seed)
    except ValueError as e:
        raise BlockCertError(str(e)) from None
    wall = time.perf_counter() - t0
    sha = store.save_weights(out, res.state)
    conf = TrainConfigRecord(**{f: getattr(cfg, f) for f in TrainConfigRecord.model_fields})
    rec = TrainRecord(config=conf, seed=seed, final_loss=res.final_loss, test_correct=res.test_correct,
                      test_accuracy=res.test_accuracy, weights_sha256=sha, torch_version=torch.__version__,
                      wall_seconds=round(wall, 3)).sealed()
    store.save_record(out, rec)
    return rec


def compute(method: str, state: dict, rank: int = 1, window: int = 8) -> dict:
    """The proof itself, from the weights only: per-group counts, cost, diagnostics."""
    c = circuits(state)
    v, k, dm, dh = c.d_vocab, c.k, c.d_model, c.d_head
    if method == "brute":
        r = brute_force(c)
        return {"proven": r["correct"], "ambiguous": r["ambiguous"], "params": {},
                "flops": cost.brute_flops(v, k, dm, dh), "cases": v**k, "diagnostics": {}}
    if method == "cubic":
        r = cubic_proof(c)
        return {"proven": r["proven"], "ambiguous": None, "params": {},
                "flops": cost.cubic_flops(v, k, dm, dh, r["cases"]), "cases": r["cases"],
                "diagnostics": {"cases_proven": float(r["cases_proven"])}}
    if method == "subcubic":
        r = subcubic_proof(c, rank=rank, window=window)
        sv = r["key_singular_values"]
        return {"proven": r["proven"], "ambiguous": None, "params": {"rank": rank, "window": window},
                "flops": cost.subcubic_flops(v, k, dm, dh, rank, window, r["evaluations"]),
                "cases": r["evaluations"],
                "diagnostics": {"max_residual_bound": r["max_residual_bound"],
                                "key_sigma_1": sv[0], "key_sigma_next": sv[min(rank, len(sv) - 1)]}}
    raise BlockCertError(f"--method {method!r} is not supported; use brute, cubic or subcubic")


def build_certificate(d: Path, method: str, state: dict, rec_sha: str, weights_sha: str, out: dict,
                      wall: float, brute: ProofCertificate | None) -> tuple[ProofCertificate, str]:
    v, k = state["W_E"].shape[0], state["W_pos"].shape[0]
    totals = group_totals(v, k)
    num, den = sum(out["proven"]), v**k
    acc_num = acc_digest = norm = None
    if method == "brute":
        acc_num = num
    elif brute is not None and brute.weights_sha256 == weights_sha:
        acc_num, acc_digest = brute.bound_num, brute.digest
    if acc_num is not None:
        norm = float(Fraction(num, acc_num)) if acc_num else None
    brute_correct = out["proven"] if method == "brute" else (brute.proven if acc_digest else None)
    text = lean_module(method, v, k, totals, out["proven"], num, brute_correct, acc_num,
                       f"proof_{method}.json")
    note = "point-arithmetic FLOPs from the loop structure (blockcert.maxk.cost); interval radii not counted"
    return ProofCertificate(
        method=method, d_vocab=v, k=k, weights_sha256=weights_sha, train_record_sha256=rec_sha, tie_convention=TIE,
        params=out["params"], group_totals=totals, proven=out["proven"], ambiguous=out["ambiguous"],
        bound_num=num, bound_den=den, bound=float(Fraction(num, den)), accuracy_num=acc_num,
        accuracy_cert_digest=acc_digest, normalised=norm,
        cost=Cost(flops=out["flops"], wall_seconds=round(wall, 4), cases_evaluated=out["cases"], note=note),
        diagnostics=out["diagnostics"], lean_module=f"{store.LEAN_DIR}/MaxKCert/{method.capitalize()}.lean",
    ).sealed(), text


def run_prove(d: Path, method: str, rank: int = 1, window: int = 8) -> ProofCertificate:
    if method not in store.METHODS:
        raise BlockCertError(f"--method {method!r} is not supported; use brute, cubic or subcubic")
    if not d.is_dir():
        raise BlockCertError(f"study directory not found: {d}")
    state = store.load_weights(d)
    rec = store.load_record(d)
    weights_sha = store.file_sha256(d / store.WEIGHTS)
    if rec.weights_sha256 != weights_sha:
        raise BlockCertError(f"{d / store.WEIGHTS} does not match the training record's SHA-256")
    rec_sha = store.file_sha256(d / store.RECORD)
    brute = store.load_certificate(d, "brute") if method != "brute" else None
    store.remove_certificate(d, method)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        out = compute(method, state, rank=rank, window=window)
    except ValueError as e:
        raise BlockCertError(str(e)) from None
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - t0
    cert, text = build_certificate(d, method, state, rec_sha, weights_sha, out, wall, brute)
    store.write_lean_package(d, method, text)
    store.save_certificate(d, cert)
    return cert
