"""RUN_DIR/bound.json (schema `blockcert.bound/1`): every constant with its kind, soundness and assumptions, the
instantiated global bound per kind (exact, rounded up), the measured deviation, and their ratios.

Readers (the Lean bridge among them) take, per block, the `value` of the constant whose kind is
`formal_kind`, and `claimed_bound[formal_kind]`. Values that are upper bounds are rounded up; the claimed
bounds are exact decimals, themselves rounded up from the exact rational recursion (exact.py).
"""

from __future__ import annotations

from typing import Literal

from blockcert.core.schema import Frozen, Sealed
from blockcert.records.certificate import ModelInfo, PromptInfo, ToolInfo
from blockcert.records.fullmodel import BoundRecord

BOUND_SCHEMA = "blockcert.bound/1"
BOUND_FILE = "bound.json"
BOUND_TABLE = "bound.md"
BOUND_PLOT = "bound_ratio.png"

Kind = Literal["global", "local", "pointwise", "per_prompt", "empirical", "trajectory"]
KINDS: tuple[Kind, ...] = ("global", "local", "pointwise", "per_prompt", "empirical", "trajectory")
SOUND_KINDS: tuple[Kind, ...] = ("global", "local", "pointwise", "per_prompt")
# The kinds with one constant per block, as the formal run (and Lean's `Run`) carries them; `per_prompt`
# composes the pointwise constants prompt by prompt, which the formal run format does not express yet.
FORMAL_KINDS: tuple[Kind, ...] = ("global", "local", "pointwise")


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
    epsilon: float  # from the block certificate (0 for native blocks)
    input_deviation: float  # measured max over prompts and tokens of ‖x̂_i − x_i‖
    output_deviation: float  # the same after the block
    radius: float  # the largest per-token radius of the local set (the max-token radius when fixed)
    epsilon_per_prompt: tuple[float, ...]  # from the block's certified metrics file (0 for native blocks)
    output_deviation_per_prompt: tuple[float, ...]
    constants: tuple[Constant, ...]


class KindBound(Frozen):
    kind: Kind
    sound: bool
    claimed_bound: str  # exact decimal, ≥ the exact Σ ε_i Π_{j>i} L_j (6 significant digits, rounded up)
    log10_bound: float | None  # None: the bound is 0
    ratio: float | None  # claimed / measured; None when measured is 0 or the ratio overflows a float
    log10_ratio: float | None
    prefix_log10_bound: tuple[float | None, ...]  # after k = 1..L stitched blocks (None: bound 0)


class BoundOptionsRecord(Frozen):
    radius: float | None  # fixed max-token radius, or None: per-token radii from the stitched replay
    empirical_tokens: int
    power_iters: int
    pieces: int  # boxes covering each segment [x_i, x̂_i] (unused with a fixed radius)


class BoundArtifact(Sealed):
    schema_version: Literal["blockcert.bound/1"] = BOUND_SCHEMA
    tool: ToolInfo = ToolInfo()
    model: ModelInfo
    prompts: PromptInfo
    distance: str = "max over tokens of the per-token L2 norm, per prompt"
    options: BoundOptionsRecord
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

    def kind(self, kind: str) -> KindBound:
        return next(b for b in self.bounds if b.kind == kind)




def bound_record(art: BoundArtifact, file: str, sha256: str):
    """The full-model certificate's summary of bound.json (`FullModelCertificate.bound`)."""

    return BoundRecord(file=file, file_sha256=sha256, formal_kind=art.formal_kind, claimed_bound=art.claimed_bound,
                       measured_deviation=art.measured_deviation, ratios=art.ratios)


