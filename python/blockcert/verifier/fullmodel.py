"""Verification of the full-model certificate, called by `blockcert verify` when one is present.

Without a model: the certificate's own digest, the block certificates it references, the hashes of
its evaluation files, and every global number re-derived from the per-layer and per-token data by the
same pure functions that produced it. With a model: the stitched replay and the semantic probe are
re-run from the model and the surrogates, and must agree within the recorded tolerances.
Each problem is one line, prefixed with the file it concerns.
"""

from __future__ import annotations

from pathlib import Path

import torch

from blockcert.arch.loading import load_run_model
from blockcert.arch.native import NativeModel
from blockcert.arch.probe import run_probe
from blockcert.arch.stitched import layer_deviations, paired_replay, prompt_evaluations
from blockcert.errors import BlockCertError
from blockcert.records.bound import BoundArtifact, bound_record
from blockcert.records.bound_claims import claim_problems
from blockcert.records.certificate import BlockCertificate
from blockcert.records.fullmodel import (
    CERTIFICATE_FILE,
    EVALUATION_FILE,
    FullModelCertificate,
    FullModelEvaluation,
    full_verdict,
    global_metrics,
)
from blockcert.records.semantic import LABELLING, ProbeItem, SemanticEvaluation, probe_sha256, semantic_metrics
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.files import resolve_inside, sha256_file
from blockcert.store.records_io import load_model_file
from blockcert.store.run_reader import (
    certified_batch,
    certified_token_ids,
    load_certified_ir,
    stitched_block_certificates,
)

P = CERTIFICATE_FILE + ": "


def _load_hashed(run_dir: Path, rel: str, digest: str, cls, what: str, problems: list[str]):
    try:
        path = resolve_inside(run_dir, rel)
    except BlockCertError as e:
        problems.append(P + str(e))
        return None
    if not path.is_file():
        problems.append(P + f"{what} {rel} is missing")
        return None
    if sha256_file(path) != digest:
        problems.append(P + f"{what} {rel}: SHA-256 mismatch (file changed since certification)")
        return None
    try:
        return load_model_file(path, cls, what)
    except BlockCertError as e:
        problems.append(P + str(e))
        return None


def _check_blocks(run_dir: Path, summary: RunSummary, cert: FullModelCertificate, problems: list[str]) -> None:
    entries = {e.index: e for e in summary.blocks}
    if tuple(r.index for r in cert.block_certificates) != cert.stitched_blocks:
        problems.append(P + "block_certificates do not list exactly the stitched blocks")
    for ref in cert.block_certificates:
        entry = entries.get(ref.index)
        if entry is None:
            problems.append(P + f"references block {ref.index}, which {layout.SUMMARY} does not list")
            continue
        if entry.digest != ref.digest or entry.certificate != ref.certificate:
            problems.append(
                P + f"block {ref.index}: certificate digest differs from {layout.SUMMARY}'s (re-extracted?)"
            )
            continue
        try:
            bc = load_model_file(resolve_inside(run_dir, ref.certificate), BlockCertificate, "certificate")
        except BlockCertError as e:
            problems.append(P + f"block {ref.index}: {e}")
            continue
        if bc.digest != ref.digest or bc.body_digest() != ref.digest:
            problems.append(P + f"block {ref.index}: {ref.certificate} does not have the recorded digest")
        elif bc.certified != ref.certified:
            problems.append(
                P + f"block {ref.index}: recorded certified={ref.certified}, its certificate says {bc.certified}"
            )


def _check_evaluation(
    run_dir: Path, ev: FullModelEvaluation, cert: FullModelCertificate, summary: RunSummary, problems: list[str]
) -> None:

    q = EVALUATION_FILE + ": "
    if ev.model != cert.model or ev.prompts != cert.prompts or ev.stitched_blocks != cert.stitched_blocks:
        problems.append(q + "model, prompts or stitched blocks differ from the certificate's")
    if [la.layer for la in ev.layers] != list(range(summary.model.num_layers)):
        problems.append(q + f"needs one layer entry per layer 0..{summary.model.num_layers - 1}")
    if [la.layer for la in ev.layers if la.stitched] != list(ev.stitched_blocks):
        problems.append(q + "layers marked stitched differ from stitched_blocks")
    if len(ev.per_prompt) != summary.prompts.n_prompts or [p.prompt for p in ev.per_prompt] != list(
        range(len(ev.per_prompt))
    ):
        problems.append(q + f"needs one per_prompt entry per certified prompt ({summary.prompts.n_prompts})")
    for p in ev.per_prompt:
        n = p.n_tokens
        lens = (len(p.baseline_nll), len(p.stitched_nll), len(p.baseline_next), len(p.stitched_next))
        if lens != (max(n - 1, 0), max(n - 1, 0), n, n):
            problems.append(q + f"prompt {p.prompt}: token-level lists do not fit its {n} tokens")
    try:
        lengths = [len(ids) for ids in certified_token_ids(run_dir, summary)]
    except BlockCertError as e:
        problems.append(q + str(e))
    else:
        if [p.n_tokens for p in ev.per_prompt] != lengths:
            problems.append(q + f"per-prompt token counts differ from those of {layout.PROMPTS}")
    try:
        recomputed = global_metrics(ev.layers, ev.per_prompt)
    except ValueError as e:  # ragged lists: already reported above
        problems.append(q + f"cannot recompute the global metrics ({e})")
        return
    if recomputed != ev.metrics:
        problems.append(q + "metrics are not what its per-layer and per-token data give")
    if recomputed != cert.metrics:
        problems.append(P + "metrics are not what the evaluation file's data give")


def _check_verdict(cert: FullModelCertificate, problems: list[str]) -> None:
    ok, reasons = full_verdict(cert.metrics, cert.policy, cert.block_certificates)
    if ok != cert.certified:
        problems.append(P + f"verdict: says certified={cert.certified} but its metrics and policy give {ok}")
    elif tuple(reasons) != cert.reasons:
        problems.append(P + "verdict: recorded reasons do not match the metrics and policy")


def _check_semantic(run_dir: Path, cert: FullModelCertificate, problems: list[str]):

    rec = cert.semantic
    if rec is None:
        return None
    se = _load_hashed(run_dir, rec.file, rec.file_sha256, SemanticEvaluation, "semantic evaluation", problems)
    if se is None:
        return None
    q = rec.file + ": "
    if rec.labelling != LABELLING or se.labelling != LABELLING:
        problems.append(q + f"labelling convention is not {LABELLING}")
    if se.model != cert.model or se.stitched_blocks != cert.stitched_blocks:
        problems.append(q + "model or stitched blocks differ from the certificate's")
    if (se.probe_name, se.probe_sha256) != (rec.probe_name, rec.probe_sha256):
        problems.append(q + "probe differs from the one the certificate records")
    items = [ProbeItem(category=i.category, prompt=i.prompt, label=i.label) for i in se.items]
    if probe_sha256(items) != se.probe_sha256:
        problems.append(q + "items do not hash to probe_sha256")
    m = semantic_metrics(se.items)
    if m != se.metrics or m != rec.metrics:
        problems.append(q + "fidelity or accuracy is not what the recorded answers give")
    return se


def _check_bound(run_dir: Path, cert: FullModelCertificate, problems: list[str]) -> None:
    """bound.json, as the certificate records it: intact, made for this stitched model, and every claim in it
    re-derived from its per-block numbers (bounds.compose, the code that made them)."""

    rec = cert.bound
    if rec is None:
        return
    art = _load_hashed(run_dir, rec.file, rec.file_sha256, BoundArtifact, "bound file", problems)
    if art is None:
        return
    q = rec.file + ": "
    if art.body_digest() != art.digest:
        problems.append(q + "does not match its digest (edited?)")
    if bound_record(art, rec.file, rec.file_sha256) != rec:
        problems.append(P + f"its bound record differs from {rec.file}")
    if art.model != cert.model or art.prompts != cert.prompts:
        problems.append(q + "model or prompts differ from the certificate's")
    if art.block_certificates != {str(r.index): r.digest for r in cert.block_certificates}:
        problems.append(q + "was computed for other block certificates")
    if art.measured_deviation_stitch != cert.metrics.measured_deviation:
        problems.append(q + "measured_deviation_stitch is not the certificate's measured deviation")
    problems += claim_problems(art)


def _check_with_model(run_dir: Path, summary: RunSummary, cert, ev, se, model: str, problems: list[str]) -> None:
    """Re-run both models from the weights and the surrogates; numbers must agree within the tolerances."""

    lm = load_run_model(summary, model, summary.model.device)
    native = NativeModel(lm)
    certs = stitched_block_certificates(run_dir, summary, cert)
    tol = cert.tolerances
    stitched = set(cert.stitched_blocks)

    def load_ir(i):
        return load_certified_ir(run_dir, certs[i], native.device)

    batch = certified_batch(run_dir, summary, lm.pad_token_id)
    r = paired_replay(native, batch, stitched, load_ir, ev.batch_size, "re-running")
    for new, old in zip(layer_deviations(r, stitched, lm.config.hidden_size), ev.layers, strict=True):
        for name in ("mae", "mean_abs", "max_token_error", "baseline_max_norm"):
            a, b = getattr(new, name), getattr(old, name)
            if (a is None) != (b is None) or (a is not None and not abs(a - b) <= tol.residual_atol):
                problems.append(
                    P + f"layer {old.layer}: {name} recorded {b}, recomputed {a} (tolerance {tol.residual_atol:.3g})"
                )
    for new, old in zip(prompt_evaluations(r), ev.per_prompt, strict=True):
        for name in ("baseline_nll", "stitched_nll"):
            worst = max(
                (
                    abs(a - b) if a is not None and b is not None else (0.0 if a is b else float("inf"))
                    for a, b in zip(getattr(new, name), getattr(old, name), strict=True)
                ),
                default=0.0,
            )
            if not worst <= tol.loss_atol:
                problems.append(P + f"prompt {old.prompt}: {name} differs from a fresh run by {worst:.3g}")
        p = old.prompt
        valid = r.valid[p]
        for name, margin in (
            ("baseline_next", r.base_margin[p][valid]),
            ("stitched_next", r.stitched_margin[p][valid]),
        ):
            diff = torch.tensor(getattr(new, name)) != torch.tensor(getattr(old, name))
            flips = int((diff & (margin > tol.logit_atol)).sum())
            if flips:
                problems.append(P + f"prompt {p}: {flips} greedy tokens in {name} differ from a fresh run")
    if se is not None:
        items = tuple(ProbeItem(category=i.category, prompt=i.prompt, label=i.label) for i in se.items)
        pr = run_probe(native, items, stitched, load_ir, se.batch_size)
        for new, old, t, k in zip(pr.items, se.items, pr.last, range(len(items)), strict=True):
            if new.label_token != old.label_token:
                problems.append(
                    P + f"semantic item {k}: label token {old.label_token!r}, recomputed {new.label_token!r}"
                )
            for name, margin in (
                ("baseline_token", pr.replay.base_margin),
                ("stitched_token", pr.replay.stitched_margin),
            ):
                if getattr(new, name) != getattr(old, name) and float(margin[k, t]) > tol.logit_atol:
                    problems.append(P + f"semantic item {k}: {name} differs from a fresh run")


def verify_full_model(run_dir: Path, model: str | None = None) -> list[str]:
    """Problems with the run's full-model certificate, one line each; [] when none (or none present)."""
    cert_path = run_dir / CERTIFICATE_FILE
    if not cert_path.exists():
        if (run_dir / EVALUATION_FILE).exists():
            return [f"{EVALUATION_FILE} present without {CERTIFICATE_FILE} (an interrupted stitch: rerun it)"]
        return []
    problems: list[str] = []
    try:
        cert = load_model_file(cert_path, FullModelCertificate, "full-model certificate")
        summary = load_model_file(run_dir / layout.SUMMARY, RunSummary, "run summary")
    except BlockCertError as e:
        return [str(e)]
    if cert.body_digest() != cert.digest:
        problems.append(P + "digest does not match its contents (edited?)")
    if cert.model != summary.model or cert.prompts != summary.prompts:
        problems.append(P + f"model or prompts differ from {layout.SUMMARY}'s")
    _check_blocks(run_dir, summary, cert, problems)
    _check_verdict(cert, problems)
    ev = _load_hashed(
        run_dir, cert.evaluation_file, cert.evaluation_sha256, FullModelEvaluation, "evaluation", problems
    )
    if ev is not None:
        _check_evaluation(run_dir, ev, cert, summary, problems)
    se = _check_semantic(run_dir, cert, problems)
    _check_bound(run_dir, cert, problems)
    if model is not None and ev is not None and not problems:
        try:
            with torch.no_grad():
                _check_with_model(run_dir, summary, cert, ev, se, model, problems)
        except BlockCertError as e:
            problems.append(P + str(e))
    return problems
