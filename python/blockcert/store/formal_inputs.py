"""A run directory's numbers as a `FormalRun`, exactly: what `formal_run.json` and the generated Lean module state.

Measured floats (ε, loss weights) enter as their exact rational values (`exact.to_fraction`), coverages as
the counts k and n and the exact loss weights themselves, so nothing is rounded toward passing; policy
thresholds enter as the decimals they were given as (`policy_value` says why). The files read:

  summary.json, block_NNN/certificate.json   ε, coverage counts and weights, certified flag, policy
  bound.json (when present)                  composed ε, Lipschitz constants, the claimed bound and the
                                             per-prompt part (formal_bounds.py)
  full_model_certificate.json (when present) the measured end-to-end deviation (formal_bounds.py)

With bound.json the blocks are every layer of the model, native ones included (formal_bounds.py says how).
A block whose numbers are not all finite (NaN/Inf activations or losses: never certified) has no exact
value to state; it is left out, and with it any bound for the run, and a note says so.
The certificates' integrity (hashes, digests, recomputation) is `blockcert verify`'s job and is not
repeated here; bound.json is checked against them, since its claim is what the bound theorem states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from blockcert.core.exact import policy_value, to_fraction
from blockcert.errors import BlockCertError
from blockcert.formal.mirror import FormalBlock, FormalPolicy, FormalRun
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.formal_bounds import EPS_CERTIFICATE, EPS_COMPOSED, RunBounds, read_run_bounds
from blockcert.store.manifest import load_manifest
from blockcert.store.run_reader import block_certificate

MAX_FORMAL_BLOCKS = 4096  # blocks one formal run may state (bounded exact arithmetic; models have ≤ ~100)


class NothingToState(BlockCertError):
    """No block of the run has finite numbers: there is no formal run (and nothing wrong with the record)."""


@dataclass(frozen=True)
class FormalBuild:
    run: FormalRun
    notes: tuple[str, ...]  # what the formal run does not carry, and why
    run_id: str = ""  # the manifest's run id: part of the Lean module's name
    info: dict[str, Any] = field(default_factory=dict)  # provenance keys for formal_run.json


def run_name(run_dir: Path, summary: RunSummary) -> str:
    """`<model>/<run directory name>`: the same on every machine for the same run (no absolute paths)."""
    return f"{summary.model.name}/{Path(run_dir).resolve().name}"


def _finite(cert: BlockCertificate) -> bool:
    m = cert.metrics
    return m.nonfinite_tokens == 0 and m.epsilon is not None


def _block(cert: BlockCertificate, lipschitz: Fraction | None, epsilon: Fraction | None = None) -> FormalBlock:
    """`epsilon` None: the certificate's own (no bound.json); otherwise bound.json's composed ε."""
    m = cert.metrics
    return FormalBlock(
        index=cert.block_index,
        epsilon=to_fraction(m.epsilon) if epsilon is None else epsilon,
        lipschitz=lipschitz,
        act_covered=m.act_covered,
        n_tokens=m.n_tokens,
        loss_covered=to_fraction(m.loss_covered_weight),
        loss_total=to_fraction(m.loss_total_weight),
        certified=cert.certified,
    )


def _native(index: int, lipschitz: Fraction, epsilon: Fraction) -> FormalBlock:
    """A layer the run holds no surrogate for: replayed natively (its composed ε), nothing measured, no
    certificate."""
    zero = Fraction(0)
    return FormalBlock(index=index, epsilon=epsilon, lipschitz=lipschitz, act_covered=0, n_tokens=0,
                       loss_covered=zero, loss_total=zero, certified=False)


def _blocks(kept: list[BlockCertificate], bounds: RunBounds) -> tuple[FormalBlock, ...]:
    if bounds.layers is None:
        return tuple(_block(c, None) for c in kept)
    by_index = {c.block_index: c for c in kept}
    return tuple(_block(by_index[la.index], la.lipschitz, la.epsilon) if la.stitched
                 else _native(la.index, la.lipschitz, la.epsilon) for la in bounds.layers)


def load_certificates(run_dir: Path) -> tuple[RunSummary, list[BlockCertificate]]:
    """The sealed manifest and every block certificate, each sealed, listed in it and agreeing with it."""
    summary = load_manifest(run_dir)
    if len(summary.blocks) > MAX_FORMAL_BLOCKS:
        raise BlockCertError(f"{layout.SUMMARY} lists {len(summary.blocks)} blocks, over the limit of "
                             f"{MAX_FORMAL_BLOCKS} for a formal run")
    certs = [block_certificate(run_dir, summary, e.index) for e in summary.blocks]
    for entry, cert in zip(summary.blocks, certs, strict=True):
        if cert.policy != summary.policy:
            # The Lean run has one policy; a run mixing policies has no single statement to make.
            raise BlockCertError(f"{entry.certificate}: policy differs from {layout.SUMMARY}'s")
    indices = [c.block_index for c in certs]
    if indices != sorted(set(indices)):
        raise BlockCertError(f"{layout.SUMMARY}: blocks are not listed once each in layer order")
    return summary, certs


def build_formal(run_dir: Path) -> FormalBuild:
    """The run's formal numbers; BlockCertError when the run's files cannot be read."""
    run_dir = Path(run_dir)
    summary, certs = load_certificates(run_dir)
    kept = [c for c in certs if _finite(c)]
    if not kept:
        # Lean's bound of an empty composition is 0 and would demand a claim of 0: state nothing instead.
        raise NothingToState(f"{run_dir}: no block has finite numbers (NaN/Inf activations or losses): "
                             "there is nothing to state formally")
    notes = [
        f"block {c.block_index} left out: {c.metrics.nonfinite_tokens} tokens with non-finite activations or "
        "losses, so it has no exact ε (it is not certified)"
        for c in certs if not _finite(c)
    ]
    bounds: RunBounds = read_run_bounds(run_dir, kept, complete=len(kept) == len(certs))
    notes += bounds.notes
    run = FormalRun(
        name=run_name(run_dir, summary),
        policy=FormalPolicy(policy_value(summary.policy.alpha_act), policy_value(summary.policy.alpha_loss)),
        blocks=_blocks(kept, bounds),
        claimed_bound=bounds.claimed_bound,
        measured_deviation=bounds.measured_deviation,
        per_prompt=bounds.per_prompt,
    )
    info = {
        "epsilon_source": EPS_COMPOSED if bounds.layers is not None else EPS_CERTIFICATE,
        "run_id": summary.run_id(),
        "source": {
            "summary": layout.SUMMARY,
            "certificates": {e.certificate: e.digest for e in summary.blocks},
            **bounds.sources,
        },
        "lipschitz_kind": bounds.lipschitz_kind,
        "per_prompt_kind": "per_prompt" if bounds.per_prompt is not None else None,
        "native_layers": [b.index for b in run.blocks if b.index not in {c.block_index for c in kept}],
        "notes": notes,
    }
    return FormalBuild(run=run, notes=tuple(notes), info=info, run_id=summary.run_id())
