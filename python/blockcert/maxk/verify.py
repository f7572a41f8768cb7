"""Read-only re-check of a Max-of-K study directory. Every file is hostile input: problems come back
as one line each, never as a traceback.

Checked: the training record's digest and the weights' SHA-256; for each certificate present, its
digest, the hashes it names, the group sizes (recomputed from d_vocab and K), 0 ≤ proven ≤ total per
group, the exact arithmetic bound_num = Σ proven, bound_den = d_vocab^K, bound and normalised against
their exact fractions, the brute-force comparison (per group and in total) when it is referenced, the
generated Lean module (regenerated and compared byte for byte), and — with `recompute` — the cubic and
subcubic proofs re-run from the weights, their per-group counts compared exactly (brute force too with
`recompute_brute`, which takes seconds for K = 4 and minutes for K = 5).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from blockcert.errors import BlockCertError
from blockcert.maxk import store
from blockcert.maxk.circuits import group_totals
from blockcert.maxk.lean import lean_module
from blockcert.maxk.prove import compute
from blockcert.maxk.records import ProofCertificate

FLOAT_TOL = 1e-12


def _check_arithmetic(c: ProofCertificate, brute: ProofCertificate | None) -> list[str]:
    p: list[str] = []
    m = c.method
    totals = group_totals(c.d_vocab, c.k)
    if c.group_totals != totals:
        p.append(f"{m}: group_totals do not match the exact group sizes for d_vocab={c.d_vocab}, K={c.k}")
    if len(c.proven) != len(totals):
        p.append(f"{m}: {len(c.proven)} per-group counts, expected {len(totals)}")
        return p
    bad = [i for i, (a, t) in enumerate(zip(c.proven, totals, strict=True)) if not 0 <= a <= t]
    if bad:
        p.append(f"{m}: proven count outside [0, group size] in group {bad[0]} (and {len(bad) - 1} more)")
    if c.ambiguous is not None and (len(c.ambiguous) != len(totals) or any(
            a < 0 or a + b > t for a, b, t in zip(c.ambiguous, c.proven, totals, strict=True))):
        p.append(f"{m}: ambiguous counts are inconsistent with the group sizes")
    if c.bound_num != sum(c.proven):
        p.append(f"{m}: bound_num {c.bound_num} ≠ Σ per-group proven counts {sum(c.proven)}")
    if c.bound_den != c.d_vocab**c.k:
        p.append(f"{m}: bound_den {c.bound_den} ≠ d_vocab^K = {c.d_vocab ** c.k}")
    if abs(c.bound - float(Fraction(c.bound_num, c.bound_den))) > FLOAT_TOL:
        p.append(f"{m}: bound {c.bound} ≠ bound_num / bound_den")
    if m == "brute":
        if c.accuracy_num != c.bound_num:
            p.append("brute: accuracy_num must equal bound_num")
        if c.ambiguous is None:
            p.append("brute: ambiguous counts are missing")
    elif c.accuracy_cert_digest is not None:
        if brute is None or brute.digest != c.accuracy_cert_digest:
            p.append(f"{m}: refers to a brute-force certificate that is not present (or has changed)")
        elif c.accuracy_num != brute.bound_num:
            p.append(f"{m}: accuracy_num {c.accuracy_num} ≠ the brute-force count {brute.bound_num}")
        else:
            if c.bound_num > brute.bound_num:
                p.append(f"{m}: bound {c.bound_num} exceeds the brute-force accuracy {brute.bound_num}: unsound")
            over = [i for i, (a, b) in enumerate(zip(c.proven, brute.proven, strict=True)) if a > b]
            if over:
                p.append(f"{m}: group {over[0]} claims more proven sequences than brute force finds correct")
    elif c.accuracy_num is not None:
        p.append(f"{m}: accuracy_num without a brute-force certificate digest")
    if c.accuracy_num:
        want = float(Fraction(c.bound_num, c.accuracy_num))
        if c.normalised is None or abs(c.normalised - want) > FLOAT_TOL:
            p.append(f"{m}: normalised {c.normalised} ≠ bound_num / accuracy_num")
    return p


def verify_maxk(d: Path, recompute: bool = True, recompute_brute: bool = False) -> list[str]:
    """Problems found in study directory `d`; empty when everything checks."""
    d = Path(d)
    try:
        return _verify(d, recompute, recompute_brute)
    except BlockCertError as e:
        return [str(e)]


def _verify(d: Path, recompute: bool, recompute_brute: bool) -> list[str]:
    if not d.is_dir():
        return [f"study directory not found: {d}"]
    problems: list[str] = []
    rec = store.load_record(d)
    if rec.body_digest() != rec.digest:
        problems.append("training record: digest does not match its contents (edited?)")
    weights_sha = store.file_sha256(d / store.WEIGHTS)
    if weights_sha != rec.weights_sha256:
        problems.append("weights.safetensors: SHA-256 differs from the training record")
    state = store.load_weights(d)
    rec_sha = store.file_sha256(d / store.RECORD)
    certs = {m: store.load_certificate(d, m) for m in store.METHODS}
    if not any(certs.values()):
        problems.append(f"no certificate in {d} (run `blockcert maxk prove {d} --method ...`)")
    brute = certs["brute"]
    for m, c in certs.items():
        if c is None:
            continue
        if c.body_digest() != c.digest:
            problems.append(f"{m}: certificate digest does not match its contents (edited?)")
        if c.method != m:
            problems.append(f"{m}: certificate names method {c.method!r}")
        if c.weights_sha256 != weights_sha:
            problems.append(f"{m}: weights SHA-256 differs from weights.safetensors")
        if c.train_record_sha256 != rec_sha:
            problems.append(f"{m}: training-record SHA-256 differs from train_record.json")
        if (c.d_vocab, c.k) != (state["W_E"].shape[0], state["W_pos"].shape[0]):
            problems.append(f"{m}: d_vocab/K differ from the weights' shapes")
            continue
        arith = _check_arithmetic(c, brute if m != "brute" else None)
        problems += arith
        if arith:
            continue
        bc = brute.proven if (m != "brute" and c.accuracy_cert_digest) else (c.proven if m == "brute" else None)
        want = lean_module(m, c.d_vocab, c.k, c.group_totals, c.proven, c.bound_num, bc, c.accuracy_num,
                           f"proof_{m}.json")
        if store.read_lean(d, m) != want:
            problems.append(f"{m}: {c.lean_module} is missing or differs from the certificate's numbers")
        if recompute and (m != "brute" or recompute_brute):

            out = compute(m, state, rank=c.params.get("rank", 1), window=c.params.get("window", 8))
            if out["proven"] != c.proven:
                diff = next(i for i, (a, b) in enumerate(zip(out["proven"], c.proven, strict=True)) if a != b)
                problems.append(f"{m}: re-running the proof gives different per-group counts (first: group {diff})")
    return problems
