"""Full-model certificates (paper §4.3, §6.5, §6.6): schemas, aggregate metrics and the verdict.

Everything here is pure: the stitched replay (stitch.py) produces the per-layer deviations and the
per-token losses, these functions turn them into global numbers, and the verifier calls the very same
functions on the numbers read back from `full_model_metrics.json`, so arithmetic is re-derived exactly.

Two files, both in the run directory:
  full_model_metrics.json      the evaluation (`FullModelEvaluation`): one `LayerDeviation` per residual
                               layer, token-level losses and greedy next tokens per prompt, global metrics.
  full_model_certificate.json  the certificate (`FullModelCertificate`): the digests of the block
                               certificates it stands on, the SHA-256 of the evaluation file, the global
                               metrics, the policy and the verdict, sealed by its own digest.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from blockcert.core.schema import Frozen, Sealed
from blockcert.records.certificate import ModelInfo, PromptInfo, ToolInfo

FULL_MODEL_SCHEMA = "blockcert.full-model-certificate/1"
EVALUATION_SCHEMA = "blockcert.full-model-metrics/1"
CERTIFICATE_FILE = "full_model_certificate.json"
EVALUATION_FILE = "full_model_metrics.json"
SEMANTIC_FILE = "full_model_semantic.json"


class FullModelPolicy(Frozen):
    """When a stitched model counts as a faithful replacement of the native one on the prompts."""

    max_relative_delta_ppl: float = Field(1e-3, ge=0)  # |PPL_stitched − PPL_base| / PPL_base
    min_next_token_agreement: float = Field(0.99, ge=0, le=1)  # greedy next token, every prefix
    require_certified_blocks: bool = True  # every referenced block certificate says certified


class FullModelTolerances(Frozen):
    """How far a recomputation on another machine may drift and still agree (float rounding only).

    `residual_atol` bounds the change of any per-layer deviation figure, `loss_atol` of any per-token
    NLL; a greedy next token may differ only where the recomputed top-2 logit margin is ≤ `logit_atol`.
    """

    residual_atol: float
    loss_atol: float
    logit_atol: float


class TokenRef(Frozen):
    prompt: int
    position: int


class LayerDeviation(Frozen):
    """Baseline vs stitched residual stream after block `layer` (one entry per layer of the model).

    `mae` follows the paper's convention (eq. 5): the mean over tokens of ||x̂_t − x_t||₂;
    `mean_abs` is the plain elementwise mean |x̂ − x|. None marks a non-finite value.
    """

    layer: int
    stitched: bool  # block `layer` itself was replaced by its surrogate
    n_tokens: int
    mae: float | None
    mean_abs: float | None
    max_token_error: float | None
    max_token_error_at: TokenRef | None
    baseline_max_norm: float | None  # max_t ||x_t||₂ of the baseline stream, for scale


class PromptEvaluation(Frozen):
    """Token-level record of one prompt of n tokens. None marks a non-finite loss."""

    prompt: int
    n_tokens: int
    baseline_nll: tuple[float | None, ...]  # n−1 entries: −log p(token t+1 | tokens ≤ t)
    stitched_nll: tuple[float | None, ...]
    baseline_next: tuple[int, ...]  # n entries: greedy next token after each prefix
    stitched_next: tuple[int, ...]


class FullModelMetrics(Frozen):
    """Global metrics of a stitched replay.

    Perplexity is corpus level: exp of the mean NLL over every next-token position of every prompt.
    Next-token agreement counts every prefix (n per prompt of n tokens): the stitched model's greedy
    next token equals the baseline's.

    `measured_deviation` is the measured end-to-end deviation in the norm the block certificates use:
    max over prompts and tokens of ||x̂_L − x_L||₂ for the final residual stream (after the last block,
    before the final norm). It is the empirical counterpart of the global bound of Theorem 1 (eq. 14),
    which bounds the same quantity from the per-block ε_i and Lipschitz constants.
    """

    n_prompts: int
    n_tokens: int
    n_loss_tokens: int
    nonfinite: int  # non-finite deviations or losses; any makes the dependent figures None
    mean_layer_mae: float | None
    worst_layer: int | None
    worst_layer_mae: float | None
    max_residual_error: float | None  # max over all layers and tokens of ||x̂ − x||₂
    max_residual_layer: int | None
    measured_deviation: float | None
    baseline_mean_nll: float | None
    stitched_mean_nll: float | None
    baseline_ppl: float | None
    stitched_ppl: float | None
    delta_ppl: float | None  # stitched − baseline
    relative_delta_ppl: float | None  # |delta_ppl| / baseline_ppl
    max_abs_loss_delta: float | None  # max over tokens of |ℓ_stitched − ℓ_base|
    mean_abs_loss_delta: float | None
    mean_loss_delta: float | None
    next_token_positions: int
    next_token_agreed: int
    next_token_agreement: float


class FullModelEvaluation(Frozen):
    """full_model_metrics.json: everything the certificate's global metrics are computed from."""

    schema_version: Literal["blockcert.full-model-metrics/1"] = EVALUATION_SCHEMA
    model: ModelInfo
    prompts: PromptInfo
    stitched_blocks: tuple[int, ...]
    batch_size: int  # prompts per pass: a recomputation uses the same, so float rounding matches
    device: Literal["cpu", "cuda"]  # where this evaluation ran (the model block records the extraction's)
    layers: tuple[LayerDeviation, ...]
    per_prompt: tuple[PromptEvaluation, ...]
    metrics: FullModelMetrics


class BlockRef(Frozen):
    index: int
    certificate: str  # path relative to the run directory
    digest: str  # the block certificate's own digest
    certified: bool


class SemanticMetrics(Frozen):
    """§6.7: fidelity (stitched vs baseline) and absolute correctness (each vs human labels), apart."""

    n_prompts: int
    fidelity_agreed: int
    fidelity: float  # stitched greedy next token == baseline's
    baseline_correct: int
    baseline_accuracy: float
    stitched_correct: int
    stitched_accuracy: float


class SemanticRecord(Frozen):
    probe_name: str
    probe_sha256: str
    labelling: str  # the labelling convention's identifier (semantic.LABELLING)
    file: str  # the semantic evaluation, relative to the run directory
    file_sha256: str
    metrics: SemanticMetrics


class BoundRecord(Frozen):
    """What `blockcert bound` adds (issue 5): its file, and the figures a reader looks for first. `blockcert
    verify` re-derives every one of them from the file's per-block numbers."""

    file: str  # bound.json, relative to the run directory
    file_sha256: str
    formal_kind: str  # the kind the formal run and the Lean module state
    claimed_bound: dict[str, str]  # kind -> exact decimal, rounded up
    measured_deviation: float
    ratios: dict[str, float | None]  # kind -> claimed / measured


class FullModelCertificate(Sealed):
    schema_version: Literal["blockcert.full-model-certificate/1"] = FULL_MODEL_SCHEMA
    tool: ToolInfo = ToolInfo()
    model: ModelInfo
    prompts: PromptInfo
    stitched_blocks: tuple[int, ...]
    block_certificates: tuple[BlockRef, ...]
    evaluation_file: str
    evaluation_sha256: str
    tolerances: FullModelTolerances
    policy: FullModelPolicy
    metrics: FullModelMetrics
    semantic: SemanticRecord | None = None
    bound: BoundRecord | None = None
    certified: bool
    reasons: tuple[str, ...]
    digest: str = ""


def index_ranges(xs: list[int]) -> str:
    """Sorted indices as compact text: [0, 1, 2, 5] -> "0-2,5"."""
    out, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(out)


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _mean(xs: list[float]) -> float:
    # fsum is exactly rounded, so the result does not depend on summation order or machine.
    return math.fsum(xs) / len(xs)


def _exp(x: float | None) -> float | None:
    if x is None:
        return None
    try:
        return finite_or_none(math.exp(x))
    except OverflowError:
        return None


def _delta_stats(deltas: list[float] | None) -> tuple[float | None, float | None, float | None]:
    """(max |Δℓ|, mean |Δℓ|, mean Δℓ) over tokens; None when a loss is not finite."""
    if deltas is None:
        return None, None, None
    if not deltas:
        return 0.0, 0.0, 0.0
    return max(abs(d) for d in deltas), _mean([abs(d) for d in deltas]), _mean(deltas)


def global_metrics(layers: tuple[LayerDeviation, ...], prompts: tuple[PromptEvaluation, ...]) -> FullModelMetrics:
    """The certificate's numbers as a pure function of the evaluation file's per-layer and per-token data."""
    nonfinite = sum(v is None for la in layers for v in (la.mae, la.mean_abs, la.max_token_error))
    maes = [la.mae for la in layers]
    finite_layers = all(v is not None for v in maes) and bool(layers)
    worst = max(layers, key=lambda la: la.mae) if finite_layers else None
    maxes = [la.max_token_error for la in layers]
    top = max(layers, key=lambda la: la.max_token_error) if all(v is not None for v in maxes) and layers else None

    base = [v for p in prompts for v in p.baseline_nll]
    stit = [v for p in prompts for v in p.stitched_nll]
    nonfinite += sum(v is None for v in base) + sum(v is None for v in stit)
    base_ok, stit_ok = bool(base) and None not in base, bool(stit) and None not in stit
    base_mean = _mean(base) if base_ok else None
    stit_mean = _mean(stit) if stit_ok else None
    base_ppl, stit_ppl = _exp(base_mean), _exp(stit_mean)
    delta = stit_ppl - base_ppl if base_ppl is not None and stit_ppl is not None else None
    max_d, mean_abs_d, mean_d = _delta_stats(
        [s - b for b, s in zip(base, stit, strict=True)] if base_ok and stit_ok else None
    )

    agreed = sum(b == s for p in prompts for b, s in zip(p.baseline_next, p.stitched_next, strict=True))
    positions = sum(len(p.baseline_next) for p in prompts)
    return FullModelMetrics(
        n_prompts=len(prompts),
        n_tokens=sum(p.n_tokens for p in prompts),
        n_loss_tokens=len(base),
        nonfinite=nonfinite,
        mean_layer_mae=_mean(maes) if finite_layers else None,
        worst_layer=worst.layer if worst else None,
        worst_layer_mae=worst.mae if worst else None,
        max_residual_error=top.max_token_error if top else None,
        max_residual_layer=top.layer if top else None,
        measured_deviation=layers[-1].max_token_error if layers else None,
        baseline_mean_nll=base_mean,
        stitched_mean_nll=stit_mean,
        baseline_ppl=base_ppl,
        stitched_ppl=stit_ppl,
        delta_ppl=delta,
        relative_delta_ppl=abs(delta) / base_ppl if delta is not None and base_ppl > 0 else None,
        max_abs_loss_delta=max_d,
        mean_abs_loss_delta=mean_abs_d,
        mean_loss_delta=mean_d,
        next_token_positions=positions,
        next_token_agreed=agreed,
        next_token_agreement=agreed / positions if positions else 0.0,
    )


def full_verdict(m: FullModelMetrics, policy: FullModelPolicy, blocks: tuple[BlockRef, ...]) -> tuple[bool, list[str]]:
    """Certified iff every figure is finite, the blocks are certified (if the policy asks), the
    relative perplexity change is within the policy and the next-token agreement reaches it."""
    reasons = []
    if m.nonfinite:
        reasons.append(f"{m.nonfinite} non-finite deviations or losses")
    if not blocks:
        reasons.append("no block is stitched")
    uncertified = [b.index for b in blocks if not b.certified]
    if policy.require_certified_blocks and uncertified:
        reasons.append(f"block certificate(s) {index_ranges(uncertified)} not certified")
    rel = m.relative_delta_ppl
    if m.n_loss_tokens == 0:
        reasons.append("no next-token positions to measure perplexity on")
    elif rel is None:
        reasons.append("relative perplexity change is not finite")
    elif rel > policy.max_relative_delta_ppl:
        reasons.append(f"|ΔPPL|/PPL {rel:.6g} > {policy.max_relative_delta_ppl:g}")
    if m.next_token_agreement < policy.min_next_token_agreement:
        reasons.append(f"next-token agreement {m.next_token_agreement:.6g} < {policy.min_next_token_agreement:g}")
    return not reasons, reasons
