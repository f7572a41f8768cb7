"""bound.json in `blockcert verify`: its claims are re-derived from its per-block numbers, and the per-block
numbers themselves from the certified tensors wherever the run holds them.

Always (weight-only or cheap):
  * ε and the per-prompt ε of every stitched block, against the block's metrics file (which verify has
    itself re-derived from a replay of the surrogate on its traces);
  * the sound global constant of every stitched block, recomputed from its certified IR (Gram iteration,
    the same code `blockcert bound` uses).
With `--deep` (the stitched replay of every layer; needs every layer in the run):
  * the pointwise (and per-prompt) constants at the traced and stitched inputs, and the local constants on
    the sets bound.json's options describe.
Constants of native layers (not in the run) can only be re-derived from the model; they are reported as
taken from the file. A recomputed constant must agree with the recorded one to a relative 1e-6: the
computation is the same float64 code, so only summation order (thread count, vector width) can move it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from blockcert.bounds.block import ball, global_bound, local_bound, segment_cover
from blockcert.bounds.pointwise import pointwise_ratios
from blockcert.bounds.weights import prepare_block
from blockcert.core.interpreter import run_block
from blockcert.errors import BlockCertError
from blockcert.records.bound import BOUND_FILE, BoundArtifact
from blockcert.records.bound_claims import claim_problems, constant
from blockcert.store.files import resolve_inside
from blockcert.store.run_reader import (
    block_certificate,
    load_bound_artifact,
    load_certified_ir,
    load_certified_prompt_epsilons,
    load_certified_traces,
    load_full_certificate,
    load_run_summary,
)
from blockcert.surrogates import densify

RTOL = 1e-6
Q = BOUND_FILE + ": "


def _differs(recorded: float | None, fresh: float) -> bool:
    return recorded is None or abs(recorded - fresh) > RTOL * max(abs(fresh), abs(recorded), 1e-300)


def bound_problems(run_dir: Path, deep: bool, rederived: list[str], from_files: list[str]) -> list[str]:
    run_dir = Path(run_dir)
    try:
        if not resolve_inside(run_dir, BOUND_FILE).exists():
            return []
        art = load_bound_artifact(run_dir)
        summary = load_run_summary(run_dir)
    except BlockCertError as e:
        return [Q + str(e)]
    out = []
    if art.model != summary.model:
        out.append(Q + f"field model differs from summary.json's (weights {art.model.weights_sha256[:16]}… vs "
                   f"{summary.model.weights_sha256[:16]}…)")
    if art.prompts != summary.prompts:
        out.append(Q + f"field prompts differs from summary.json's ({art.prompts.sha256[:16]}… vs "
                   f"{summary.prompts.sha256[:16]}…)")
    if not _claims_checked_by_full_certificate(run_dir):
        out += claim_problems(art)
    try:
        certs = {e.index: block_certificate(run_dir, summary, e.index) for e in summary.blocks}
        out += _epsilons(run_dir, art, certs)
        rederived.append("bound.json: ε and per-prompt ε of every stitched block (from the certified metrics, "
                         "themselves re-derived from the traces)")
        if "global" in art.kinds:
            out += _global_constants(run_dir, art, certs)
            rederived.append("bound.json: the sound global constant of every stitched block (from its certified IR)")
        if deep:
            out += _trajectory_constants(run_dir, art, certs)
            rederived.append("bound.json: pointwise, per-prompt and local constants (stitched replay, --deep)")
        else:
            from_files.append("bound.json: pointwise, per-prompt and local constants (re-derived with --deep)")
    except BlockCertError as e:
        out.append(Q + str(e))
    native = [b.index for b in art.blocks if not b.stitched]
    if native:
        from_files.append(f"bound.json: constants of native layers {native[:8]}{'…' if len(native) > 8 else ''} "
                          "(need the model)")
    return out


def _claims_checked_by_full_certificate(run_dir: Path) -> bool:
    """verifier/fullmodel.py already re-derives bound.json's claims when the full-model certificate records it."""
    try:
        return load_full_certificate(run_dir).bound is not None
    except BlockCertError:
        return False


def _epsilons(run_dir: Path, art: BoundArtifact, certs) -> list[str]:
    out = []
    for b in art.blocks:
        cert = certs.get(b.index)
        if cert is None:
            if b.stitched or b.epsilon != 0.0 or any(e != 0.0 for e in b.epsilon_per_prompt):
                out.append(Q + f"field blocks[{b.index}]: a layer the run holds no surrogate for must be native, ε = 0")
            continue
        eps = load_certified_prompt_epsilons(run_dir, cert)
        if b.epsilon != cert.metrics.epsilon:
            out.append(Q + f"field blocks[{b.index}].epsilon = {b.epsilon!r}, its certificate says "
                       f"{cert.metrics.epsilon!r}")
        if tuple(b.epsilon_per_prompt) != eps:
            out.append(Q + f"field blocks[{b.index}].epsilon_per_prompt differs from {cert.metrics_file}'s per-prompt "
                       f"ε (first: {b.epsilon_per_prompt[:1]} vs {eps[:1]})")
    return out


def _global_constants(run_dir: Path, art: BoundArtifact, certs) -> list[str]:
    out = []
    for b in art.blocks:
        cert = certs.get(b.index)
        if cert is None:
            continue
        fresh = global_bound(prepare_block(densify(load_certified_ir(run_dir, cert)))).lipschitz
        rec = constant(b, "global").value
        if _differs(rec, fresh):
            out.append(Q + f"field blocks[{b.index}].constants[global].value = {rec!r}, re-derived from the IR "
                       f"{fresh:.9g}")
    return out


def _trajectory_constants(run_dir: Path, art: BoundArtifact, certs) -> list[str]:
    """The stitched replay of bound.json, block by block, from the certified traces (every layer in the run)."""
    missing = [b.index for b in art.blocks if b.index not in certs]
    if missing:
        raise BlockCertError(f"--deep needs every layer in the run; layers {missing[:8]} are native (pass the "
                             "model to `blockcert bound` to re-derive them instead)")
    out, x_hat = [], None
    opts = art.options
    for b in art.blocks:
        cert = certs[b.index]
        ir = load_certified_ir(run_dir, cert)
        trace, _ = load_certified_traces(run_dir, cert, ir.spec)
        x, valid, positions = trace.x_in, trace.valid, trace.positions
        x_hat = x if x_hat is None else x_hat
        with torch.no_grad():
            dense = densify(ir)  # the bounds read the dense form, as workflows/bound.py does
            ratios = pointwise_ratios(dense, x, x_hat, valid, positions).tolist()
            lengths = valid.sum(-1).tolist()
            if opts.radius is None:
                sets = [segment_cover(x[p, :n], x_hat[p, :n], positions[p, :n], opts.pieces)
                        for p, n in enumerate(lengths)]
            else:
                sets = [ball(x[p, :n], opts.radius, positions[p, :n]) for p, n in enumerate(lengths)]
            local = local_bound(prepare_block(dense), sets).lipschitz if "local" in art.kinds else None
            x_hat = run_block(ir, x_hat, valid, positions)
        kinds = art.kinds
        if "per_prompt" in kinds and (len(pp := constant(b, "per_prompt").per_prompt) != len(ratios) or any(
                _differs(r, f) for r, f in zip(pp, ratios, strict=False))):
            out.append(Q + f"field blocks[{b.index}].constants[per_prompt].per_prompt differs from the re-derived "
                       f"pointwise ratios (max {max(ratios):.9g})")
        if "pointwise" in kinds and _differs(constant(b, "pointwise").value, max(ratios)):
            out.append(Q + f"field blocks[{b.index}].constants[pointwise].value = {constant(b, 'pointwise').value!r}, "
                       f"re-derived {max(ratios):.9g}")
        if local is not None and _differs(constant(b, "local").value, local):
            out.append(Q + f"field blocks[{b.index}].constants[local].value = {constant(b, 'local').value!r}, "
                       f"re-derived {local:.9g}")
    return out

