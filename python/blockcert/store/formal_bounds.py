"""The optional parts of a formal run: Lipschitz constants and the claimed bound (bound.json, `blockcert bound`),
and the measured end-to-end deviation (full_model_certificate.json, `blockcert stitch`). Either file may be
absent; the run is then checked on what it carries and its module states no bound theorem.

bound.json bounds the model layer by layer: every layer 0..L−1, the stitched ones and the native ones the
run holds no surrogate for, composed by b ← L_i·b + ε_i. The formal run follows it exactly, so that the
recursion Lean computes is the one whose result bound.json rounded up into its claim.

Which ε (docs/bounds.md §½, schema `blockcert.bound/2`): with bound.json present every block's ε is its
`epsilon_composed` — the bound on the real surrogate's error at the traced input plus the float32 replay's
forward error, the one ε for which `TrajHyp`'s hypotheses hold by construction. The certificate's float32 ε
misses the forward error and is never composed (it stays the ε of a run without bound.json, where no bound
is stated). A native layer has no certificate: it enters with its composed ε (the traces' float32 rounding
against the real block), no tokens measured (act 0/0, loss 0/0) and certified = false, which is what Lean's
check demands of a block without coverage. The constants are those of bound.json's `formal_kind` (a sound
kind with one constant per block); its values are upper bounds already rounded up, and enter exactly, as
does the claimed bound (an exact decimal).

The per-prompt part (Lean's `PerPrompt`): the `per_prompt` kind's constant of each prompt, that prompt's
composed ε (`epsilon_composed_per_prompt`), the deviation bound.json's replay measured for that prompt after
the last layer, and the kind's claim (the max over prompts, rounded up).

A bound.json that is present but unreadable, edited, or stale (made for other block certificates) is an
error, not a silent omission: its claim is what the bound theorem would state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from blockcert.core.digest import sha256_bytes
from blockcert.core.exact import to_fraction
from blockcert.errors import BlockCertError
from blockcert.formal.mirror import FormalPrompt, PerPrompt, PromptBlock
from blockcert.records.bound import FORMAL_KINDS, BoundArtifact
from blockcert.records.certificate import BlockCertificate
from blockcert.records.fullmodel import CERTIFICATE_FILE, FullModelCertificate
from blockcert.store.files import resolve_inside
from blockcert.store.records_io import load_model_file, parse_model
from blockcert.store.strict_json import read_regular

BOUND_FILE = "bound.json"


@dataclass(frozen=True)
class Layer:
    """One layer of the bound's recursion: stitched (its certificate's block) or native (ε = 0)."""

    index: int
    stitched: bool
    lipschitz: Fraction
    epsilon: Fraction  # bound.json's epsilon_composed: what the recursion composes


# formal_run.json's `epsilon_source` (provenance; the manifest's digest of formal_run.json covers it).
EPS_COMPOSED = "bound.json epsilon_composed (certified error plus the replay's forward error)"
EPS_CERTIFICATE = "block certificates' epsilon (no bound.json: no bound is stated)"


@dataclass(frozen=True)
class RunBounds:
    layers: tuple[Layer, ...] | None = None  # None: no bound carried (no or unusable bound.json)
    claimed_bound: Fraction | None = None
    measured_deviation: Fraction | None = None
    notes: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)  # file -> SHA-256, provenance for formal_run.json
    lipschitz_kind: str | None = None
    per_prompt: PerPrompt | None = None


def read_run_bounds(run_dir: Path, certs: list[BlockCertificate], complete: bool) -> RunBounds:
    """What bound.json and the full-model certificate add to the formal run of the certified blocks `certs`.

    `complete` is False when some of the run's blocks were left out (non-finite numbers): no bound is then
    carried, since a bound without those blocks would not be a bound for the run's model.
    """
    notes: list[str] = []
    sources: dict[str, str] = {}
    layers, claimed, kind, bound_measured, per_prompt = None, None, None, None, None
    path = resolve_inside(run_dir, BOUND_FILE)
    if not path.exists():
        notes.append(f"no {BOUND_FILE}: no Lipschitz constants, no bound theorem (run `blockcert bound`)")
    elif not complete:
        notes.append(f"blocks were left out: {BOUND_FILE}'s constants and claimed bound are not carried")
    else:
        layers, claimed, kind, bound_measured, per_prompt, why = _bound_file(path, certs)
        if why:
            notes.append(why)
        sources[BOUND_FILE] = sha256_bytes(read_regular(path, BOUND_FILE))
    stitched = [c.block_index for c in certs]
    measured, m_notes, m_sources = _stitch_measured(run_dir, certs)
    notes += m_notes
    sources.update(m_sources)
    if measured is None and bound_measured is not None:
        measured = bound_measured
        notes.append(f"the measured deviation is {BOUND_FILE}'s (its own stitched replay of blocks {stitched})")
    if measured is not None and claimed is None:
        # Lean's check demands a claim beside any measured deviation: with nothing to compare it with, it is
        # left out rather than failing the run.
        notes.append("the measured deviation is not carried: the run claims no bound to compare it with")
        measured = None
    return RunBounds(layers, claimed, measured, tuple(notes), sources, kind, per_prompt)


def _bound_file(path: Path, certs: list[BlockCertificate]):
    """(layers, claimed bound, kind, measured deviation, per-prompt part, note) from bound.json; BlockCertError
    when unusable."""

    art = load_model_file(path, BoundArtifact, "bound file")
    if art.body_digest() != art.digest:
        raise BlockCertError(f"{BOUND_FILE} does not match its digest (edited?): rerun `blockcert bound`")
    by_index = {c.block_index: c for c in certs}
    if art.block_certificates != {str(i): c.digest for i, c in by_index.items()}:
        raise BlockCertError(f"{BOUND_FILE} was made for other block certificates (stale): rerun `blockcert bound`")
    n_layers = certs[0].model.num_layers
    if [b.index for b in art.blocks] != list(range(n_layers)):
        raise BlockCertError(f"{BOUND_FILE} does not bound every layer 0..{n_layers - 1} in order")
    kind = art.formal_kind
    if kind not in FORMAL_KINDS:
        raise BlockCertError(f"{BOUND_FILE}: formal_kind {kind!r} is not a sound kind with one constant per block "
                             f"{FORMAL_KINDS}")
    layers = []
    for b in art.blocks:
        cert = by_index.get(b.index)
        if b.stitched != (cert is not None):
            raise BlockCertError(f"{BOUND_FILE}: block {b.index} stitched={b.stitched} disagrees with the run")
        # bound.json records the certificate's float32 ε beside the composed one: a mismatch means it was made
        # for other numbers. What the recursion (and so the formal run) composes is the composed ε.
        if b.epsilon != (cert.metrics.epsilon if cert is not None else 0.0):
            raise BlockCertError(f"{BOUND_FILE}: block {b.index} ε differs from its certificate (stale)")
        const = next((c for c in b.constants if c.kind == kind), None)
        if const is None or const.value is None or not const.sound:
            raise BlockCertError(f"{BOUND_FILE}: block {b.index} has no sound {kind} Lipschitz constant")
        layers.append(Layer(b.index, b.stitched, to_fraction(const.value), to_fraction(b.epsilon_composed)))
    if kind not in art.claimed_bound:
        raise BlockCertError(f"{BOUND_FILE}: no claimed bound for its formal kind {kind}")
    claimed = to_fraction(art.claimed_bound[kind])  # an exact decimal string
    per_prompt, why = _per_prompt(art)
    return tuple(layers), claimed, kind, to_fraction(art.measured_deviation), per_prompt, why


PROMPT_KIND = "per_prompt"  # the sound kind composed prompt by prompt in the max-token distance


def _per_prompt(art: BoundArtifact) -> tuple[PerPrompt | None, str | None]:
    """The `per_prompt` kind as Lean's `PerPrompt`, or (None, why) when bound.json does not carry it whole."""
    blocks = art.blocks
    n = len(blocks[0].epsilon_composed_per_prompt) if blocks else 0
    consts = [next((c for c in b.constants if c.kind == PROMPT_KIND), None) for b in blocks]
    if n == 0 or PROMPT_KIND not in art.claimed_bound or any(
            c is None or not c.sound or len(c.per_prompt) != n or len(b.epsilon_composed_per_prompt) != n
            or len(b.output_deviation_per_prompt) != n for b, c in zip(blocks, consts, strict=True)):
        return None, f"{BOUND_FILE} carries no complete sound {PROMPT_KIND} kind: no per-prompt bound is stated"
    prompts = tuple(
        FormalPrompt(
            blocks=tuple(PromptBlock(to_fraction(b.epsilon_composed_per_prompt[p]), to_fraction(c.per_prompt[p]))
                         for b, c in zip(blocks, consts, strict=True)),
            measured_deviation=to_fraction(blocks[-1].output_deviation_per_prompt[p]),
        )
        for p in range(n)
    )
    return PerPrompt(to_fraction(art.claimed_bound[PROMPT_KIND]), prompts), None


def _stitch_measured(run_dir: Path, certs: list[BlockCertificate]) -> tuple[Fraction | None, list[str], dict]:
    """The full-model certificate's measured deviation, when it stitched exactly the run's certified blocks as
    they are now (otherwise it measured another model than the one the bound speaks of). Its own integrity
    is `blockcert verify`'s business (fullverify.py); here a mismatch only means it is not carried."""

    path = resolve_inside(run_dir, CERTIFICATE_FILE)
    if not path.exists():
        return None, [], {}
    data = read_regular(path, "full-model certificate")
    cert = parse_model(data, FullModelCertificate, f"full-model certificate {CERTIFICATE_FILE}")
    source = {CERTIFICATE_FILE: sha256_bytes(data)}
    digests = {c.block_index: c.digest for c in certs}
    why = None
    if cert.body_digest() != cert.digest:
        why = "does not match its digest"
    elif list(cert.stitched_blocks) != list(digests):
        why = f"stitched blocks {list(cert.stitched_blocks)}, not the run's {list(digests)}"
    elif any(digests.get(r.index) != r.digest for r in cert.block_certificates):
        why = "refers to older block certificates"
    elif cert.metrics.measured_deviation is None:
        why = "records a non-finite deviation"
    if why is not None:
        return None, [f"{CERTIFICATE_FILE} {why}: its measured deviation is not used"], source
    return to_fraction(cert.metrics.measured_deviation), [], source
