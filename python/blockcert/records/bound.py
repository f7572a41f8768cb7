"""RUN_DIR/bound.json (schema `blockcert.bound/2`): every constant with its kind, soundness and assumptions, the
instantiated global bound per kind (exact, rounded up), the measured deviation, and their ratios.

Schema 2 (issue 18): the surrogate each bound speaks of is the real-valued function the block's IR declares,
and every kind composes ε_i = `epsilon_composed_per_prompt` (an enclosure bound on the real surrogate's error
at the traced input plus the replay's forward error at the stitched input), not the certificate's measured
ε. `pointwise` and `per_prompt` are trajectory certificates: valid only at the traced points of the measured
stitched run (KIND_DESCRIPTIONS). `metric` composes with one weighted distance per layer.

Readers (the Lean bridge among them) take, per block, the `value` of the constant whose kind is
`formal_kind`, and `claimed_bound[formal_kind]`. Values that are upper bounds are rounded up; the claimed
bounds are exact decimals, themselves rounded up from the exact rational recursion (exact.py).
"""

from __future__ import annotations

from typing import Literal

from blockcert.core.schema import Frozen, Sealed
from blockcert.records.certificate import ModelInfo, PromptInfo, ToolInfo
from blockcert.records.fullmodel import BoundRecord

BOUND_SCHEMA = "blockcert.bound/2"
BOUND_FILE = "bound.json"
BOUND_TABLE = "bound.md"
BOUND_PLOT = "bound_ratio.png"

Kind = Literal["global", "local", "metric", "pointwise", "per_prompt", "empirical", "trajectory"]
KINDS: tuple[Kind, ...] = ("global", "local", "metric", "pointwise", "per_prompt", "empirical", "trajectory")
SOUND_KINDS: tuple[Kind, ...] = ("global", "local", "metric", "pointwise", "per_prompt")
# Kinds composed prompt by prompt (each prompt's own ε and constants, the max over prompts at the end).
PER_PROMPT_KINDS: tuple[Kind, ...] = ("metric", "per_prompt")
# What each kind's bound covers, in words: recorded in bound.json and shown by the report.
KIND_DESCRIPTIONS: dict[str, str] = {
    "global": "Lipschitz, sound for all inputs of every block",
    "local": "Lipschitz, sound on the segment (or --radius ball) from each traced to each stitched input",
    "metric": "Lipschitz in per-layer token-weighted distances, sound on the ball of radius ρ_i = 2·d_i(x̂_i, x_i) "
              "around each traced input: holds for every input of block i in that ball, traced or not",
    "pointwise": "trajectory certificate: sound only at the traced points of this measured stitched run; says "
                 "nothing about any other input, and needs the stitched run to be computed",
    "per_prompt": "trajectory certificate composed prompt by prompt: sound only at the traced points of this "
                  "measured stitched run; says nothing about any other input",
    "empirical": "lower estimate of the Jacobian norm at the traced inputs: never a bound",
    "trajectory": "float ratios measured along the stitched run: no soundness claim",
}
# The kinds with one constant per block, as the formal run (and Lean's `Run`) carries them; `per_prompt`
# composes the pointwise constants prompt by prompt, which the formal run format does not express yet.
FORMAL_KINDS: tuple[Kind, ...] = ("global", "local", "pointwise")
# What each kind needs computed besides the block's enclosed replay (which every kind composes): `blockcert
# bound --kinds` may leave out the costly ones (local and metric are ~95 % of the time on a real model).
KIND_NEEDS: dict[str, tuple[Kind, ...]] = {"per_prompt": ("pointwise",), "empirical": ("local",)}


def kinds_of(blocks) -> tuple[str, ...]:
    """The kinds the blocks' constants carry (the first block's; claim_problems checks the others agree)."""
    return tuple(c.kind for c in blocks[0].constants) if blocks else ()


class Constant(Frozen):
    """One per-block Lipschitz-type constant. `value` None: undefined (a trajectory ratio 0/0)."""

    kind: Kind
    value: float | None
    sound: bool  # a proven upper bound on what the composition theorem needs, under `assumptions`
    assumptions: tuple[str, ...]
    parts: dict[str, float] = {}  # the sublayer factors it was assembled from (K_attn, K_MLP, ...)
    per_prompt: tuple[float, ...] = ()  # kind per_prompt: the constant of each prompt (value is their max)


class BlockBound(Frozen):
    index: int
    stitched: bool  # False: the block is native (ε = 0), replayed with the model
    epsilon: float  # from the block certificate (0 for native blocks): a float32 measurement, not composed
    input_deviation: float  # measured max over prompts and tokens of ‖x̂_i − x_i‖
    output_deviation: float  # the same after the block
    radius: float  # the largest per-token radius of the local set (the max-token radius when fixed)
    epsilon_per_prompt: tuple[float, ...]  # from the block's certified metrics file (0 for native blocks)
    output_deviation_per_prompt: tuple[float, ...]
    # What every kind composes, per prompt: ≥ max_t (‖B̂(x_i)_t − x_{i+1,t}‖ + ‖x̂_{i+1,t} − B̂(x̂_i)_t‖) with B̂ the
    # real-valued IR function (enclosures; rounded up), and its parts.
    epsilon_composed: float
    epsilon_composed_per_prompt: tuple[float, ...]
    epsilon_real_per_prompt: tuple[float, ...]  # ≥ max_t ‖B̂(x_i)_t − x_{i+1,t}‖
    replay_error_per_prompt: tuple[float, ...]  # ≥ max_t ‖x̂_{i+1,t} − B̂(x̂_i)_t‖ (the replay's forward error)
    # Kind metric, per prompt: the input distance's token weights w_{i,t} (valid tokens; the output weights are
    # the next block's input weights, all 1 after the last block), the ball radius ρ_i (in d_i), ε_i and the
    # measured deviation after the block, both in d_{i+1}.
    # All empty when the metric kind was not computed (`--kinds`).
    metric_weights_in: tuple[tuple[float, ...], ...] = ()
    metric_radius_per_prompt: tuple[float, ...] = ()
    epsilon_metric_per_prompt: tuple[float, ...] = ()
    output_deviation_metric_per_prompt: tuple[float, ...] = ()
    constants: tuple[Constant, ...]


class KindBound(Frozen):
    kind: Kind
    sound: bool
    description: str  # what the bound covers (KIND_DESCRIPTIONS)
    claimed_bound: str  # exact decimal, ≥ the exact Σ ε_i Π_{j>i} L_j (6 significant digits, rounded up)
    log10_bound: float | None  # None: the bound is 0
    ratio: float | None  # claimed / measured; None when measured is 0 or the ratio overflows a float
    log10_ratio: float | None
    prefix_log10_bound: tuple[float | None, ...]  # after k = 1..L stitched blocks (None: bound 0)
    # The deviation each prefix bound bounds, measured in the same distance (metric: d_k; others: max-token).
    prefix_measured: tuple[float, ...]


class BoundOptionsRecord(Frozen):
    radius: float | None  # fixed max-token radius, or None: per-token radii from the stitched replay
    empirical_tokens: int
    power_iters: int
    pieces: int  # boxes covering each segment [x_i, x̂_i] (unused with a fixed radius)


class BoundArtifact(Sealed):
    schema_version: Literal["blockcert.bound/2"] = BOUND_SCHEMA
    tool: ToolInfo = ToolInfo()
    model: ModelInfo
    prompts: PromptInfo
    distance: str = "max over tokens of the per-token L2 norm, per prompt"
    surrogate: str = ("B̂_i is the real-valued function the block's (dense) IR declares; the float32 replay's "
                      "forward error is bounded a posteriori from enclosures and added to ε_i")
    options: BoundOptionsRecord
    kinds: tuple[Kind, ...] = KINDS  # the kinds computed (`blockcert bound --kinds`), in KINDS order
    block_certificates: dict[str, str]  # block index -> certificate digest, for the stitched blocks
    blocks: tuple[BlockBound, ...]
    claimed_bound: dict[str, str]  # kind -> exact decimal
    bounds: tuple[KindBound, ...]
    measured_deviation: float  # max over prompts and tokens of ‖x̂_L − x_L‖ (final residual stream)
    measured_prefix: tuple[float, ...]  # the same after k = 1..L blocks
    measured_deviation_stitch: float | None  # from full_model_metrics.json, when `blockcert stitch` ran
    ratios: dict[str, float | None]  # kind -> claimed / measured
    formal_kind: Kind  # the tightest of FORMAL_KINDS: what the formal check uses
    digest: str = ""

    def kind(self, kind: str) -> KindBound | None:
        return next((b for b in self.bounds if b.kind == kind), None)




def bound_record(art: BoundArtifact, file: str, sha256: str):
    """The full-model certificate's summary of bound.json (`FullModelCertificate.bound`)."""

    return BoundRecord(file=file, file_sha256=sha256, formal_kind=art.formal_kind, claimed_bound=art.claimed_bound,
                       measured_deviation=art.measured_deviation, ratios=art.ratios)


