"""Deterministic run directories for the formal/bridge tests, built from committed JSON specs (no model).

A spec (tests/fixtures/formal/runs/<name>.json) lists each block's recorded metrics; the certificates,
the summary and their verdicts are produced here by the project's own models and functions
(`metrics.verdict`, `extract.summary_of`, `.sealed()`), so the files are what `blockcert extract` would
write for those numbers. A spec's `bound` (per-layer constants of each kind) becomes bound.json through
the bound engineer's `BoundArtifact`, composed and rounded as `blockcert bound` does; its `full_model`
entry becomes a full-model certificate built through `fullmodel.global_metrics`.
The run directory is named after the spec, so the run name (and the golden Lean text) is the same on
every machine.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

from blockcert.core.exact import decimal_str
from blockcert.core.metrics import BlockMetrics, Policy, Thresholds, verdict
from blockcert.records.bound import (
    KIND_DESCRIPTIONS,
    KINDS,
    SOUND_KINDS,
    BlockBound,
    BoundArtifact,
    BoundOptionsRecord,
    Constant,
    KindBound,
)
from blockcert.records.bound_claims import claim_problems, kind_prefixes, log10, measured_prefix
from blockcert.records.bound_claims import claimed as claimed_bound
from blockcert.records.certificate import BlockCertificate, ModelInfo, PromptInfo, Tolerances
from blockcert.store import layout
from blockcert.store.records_io import write_model_file
from blockcert.workflows.extract import summary_of
from blockcert.workflows.reseal import reseal_run

FIXTURES = Path(__file__).parent / "fixtures" / "formal"
SPECS = FIXTURES / "runs"  # runs that have a formal run (each has golden files)
UNSTATED = FIXTURES / "unstated"  # runs with nothing to state formally
GOLDEN = Path(__file__).parent / "golden"

MODEL = ModelInfo(
    name="tiny-fixture", source="tests/fixtures/formal (recorded numbers, no weights)", architecture="LlamaForCausalLM",
    family="llama", num_layers=4, weights_sha256="0" * 64, dtype="float64", device="cpu",
)
PROMPTS = PromptInfo(name="fixture", description="recorded numbers only", sha256="1" * 64, token_ids_sha256="2" * 64,
                     n_prompts=2, n_tokens=74)


def spec_names() -> list[str]:
    return sorted(p.stem for p in SPECS.glob("*.json"))


def _metrics(b: dict) -> BlockMetrics:
    n, k, lc, lt = b["n_tokens"], b["act_covered"], b["loss_covered_weight"], b["loss_total_weight"]
    eps = b["epsilon"]
    return BlockMetrics(
        n_tokens=n, nonfinite_tokens=b.get("nonfinite_tokens", 0), epsilon=eps, mae=None if eps is None else eps / 2,
        max_relative_error=None if eps is None else eps / 90, max_output_norm=90.0, act_covered=k,
        cov_act=k / n if n else 0.0, path_matched=n, cov_path=1.0 if n else 0.0, n_loss_tokens=max(n - 2, 0),
        loss_covered_weight=lc, loss_total_weight=lt, cov_loss=lc / lt if lt > 0 else 1.0,
    )


def _certificate(b: dict, policy: Policy, thresholds: Thresholds) -> BlockCertificate:
    m = _metrics(b)
    ok, reasons = verdict(m, policy)
    return BlockCertificate(
        model=MODEL, block_index=b["index"], prompts=PROMPTS, thresholds=thresholds, policy=policy,
        tolerances=Tolerances(replay_atol=1e-9, loss_atol=1e-9), metrics=m,
        metrics_file=f"block_{b['index']:03d}/{layout.METRICS}", artifacts={}, certified=ok, reasons=tuple(reasons),
    ).sealed()


def _full_model(run_dir: Path, spec: dict, certs: list[BlockCertificate]) -> None:
    from blockcert.records.fullmodel import (
        CERTIFICATE_FILE,
        BlockRef,
        FullModelCertificate,
        FullModelPolicy,
        FullModelTolerances,
        LayerDeviation,
        PromptEvaluation,
        full_verdict,
        global_metrics,
    )

    fm = spec["full_model"]
    stitched = tuple(fm.get("stitched_blocks", [c.block_index for c in certs]))
    # One deviation per layer of the model; the last layer's worst token is the measured end-to-end deviation.
    layers = tuple(
        LayerDeviation(layer=i, stitched=i in stitched, n_tokens=4, mae=d / 2, mean_abs=d / 8, max_token_error=d,
                       max_token_error_at=None, baseline_max_norm=90.0)
        for i, d in enumerate(fm["layer_max_errors"])
    )
    prompts = (PromptEvaluation(prompt=0, n_tokens=4, baseline_nll=(2.0, 1.5, 1.25), stitched_nll=(2.0, 1.5, 1.25),
                                baseline_next=(5, 6, 7, 8), stitched_next=(5, 6, 7, 8)),)
    metrics = global_metrics(layers, prompts)
    by_index = {c.block_index: c for c in certs}
    refs = tuple(BlockRef(index=i, certificate=f"block_{i:03d}/{layout.CERTIFICATE}", digest=by_index[i].digest,
                          certified=by_index[i].certified) for i in stitched)
    policy = FullModelPolicy()
    ok, reasons = full_verdict(metrics, policy, refs)
    cert = FullModelCertificate(
        model=MODEL, prompts=PROMPTS, stitched_blocks=stitched, block_certificates=refs,
        evaluation_file="full_model_metrics.json", evaluation_sha256="3" * 64,
        tolerances=FullModelTolerances(residual_atol=1e-9, loss_atol=1e-9, logit_atol=1e-9), policy=policy,
        metrics=metrics, certified=ok, reasons=tuple(reasons),
    ).sealed()
    write_model_file(run_dir / CERTIFICATE_FILE, cert)


def _bound(run_dir: Path, spec: dict, certs: list[BlockCertificate]) -> None:
    """bound.json (schema /2) as `blockcert bound` writes it, from the spec's per-layer constants, with every claim
    made by `bound_claims` itself, so that `claim_problems` re-derives each one.

    Per prompt p (PROMPTS.n_prompts = 2) and layer i: the certified ε is the certificate's for p = 0 and half of it
    for p = 1; the replay's forward error is the spec's `replay_error` (default 2⁻²⁴ on stitched layers, 2⁻²⁶ on
    native ones), halved for p = 1; ε_composed = ε_real + forward error (ε_real = the certified ε), which exceeds
    the certificate's ε on every layer, as it does on real runs. Per-prompt constants are the spec's `per_prompt`
    pair (default: the pointwise value for both); `metric` takes the global value in the max-token distance. The
    measured deviation after each layer is half the smallest sound bound there (prompt 1: half of prompt 0's),
    and the spec's `measured_deviation` after the last."""
    bs = spec["bound"]
    by_index = {c.block_index: c for c in certs}
    layers = bs["layers"]
    n_prompts = PROMPTS.n_prompts

    def eps(i: int) -> float:
        return by_index[i].metrics.epsilon if i in by_index else 0.0

    def per_prompt(x: float) -> tuple[float, ...]:
        return (x, x / 2)  # p = 1 exactly half (a power-of-two scaling: exact in binary, so max is p = 0)

    draft = []
    for i, la in enumerate(layers):
        fwd = la.get("replay_error", 2.0 ** -24 if i in by_index else 2.0 ** -26)
        composed = eps(i) + fwd  # rounded to nearest; the fixture only needs ε_composed ≥ ε_real + fwd exactly
        while composed < eps(i) + fwd or Fraction(composed) < Fraction(eps(i)) + Fraction(fwd):
            composed = math.nextafter(composed, math.inf)
        pointwise = la.get("pointwise", la.get("local"))
        pp = tuple(la.get("per_prompt", (pointwise, pointwise)))
        values = {**{k: la.get(k) for k in KINDS}, "pointwise": pointwise, "metric": la["global"], "per_prompt": pp[0]}
        constants = tuple(
            Constant(kind=k, value=values[k], sound=k in SOUND_KINDS, assumptions=("fixture",),
                     per_prompt=(pp if k == "per_prompt" else (la["global"],) * n_prompts if k == "metric" else ()))
            for k in KINDS)
        draft.append(dict(index=i, stitched=i in by_index, epsilon=eps(i), input_deviation=0.0, radius=0.0,
                          epsilon_per_prompt=per_prompt(eps(i)), epsilon_composed=composed,
                          epsilon_composed_per_prompt=per_prompt(composed),
                          epsilon_real_per_prompt=per_prompt(eps(i)), replay_error_per_prompt=per_prompt(fwd),
                          metric_weights_in=((1.0,) * 4,) * n_prompts, metric_radius_per_prompt=(0.0,) * n_prompts,
                          epsilon_metric_per_prompt=per_prompt(composed), constants=constants))

    def blocks_with(dev: list[float]) -> tuple[BlockBound, ...]:
        return tuple(BlockBound(**d, output_deviation=x, output_deviation_per_prompt=per_prompt(x),
                                output_deviation_metric_per_prompt=per_prompt(x))
                     for d, x in zip(draft, dev, strict=True))

    # The bounds do not depend on the measured deviations: compute them once, then measure below them.
    prefix = kind_prefixes(blocks_with([0.0] * len(layers)))
    lowest = [min(prefix[k][i] for k in SOUND_KINDS) for i in range(len(layers))]
    dev = [float(b / 2) for b in lowest[:-1]] + [bs["measured_deviation"]]
    blocks = blocks_with(dev)
    prefix = kind_prefixes(blocks)
    claimed = {k: claimed_bound(prefix[k]) for k in KINDS}
    measured = {k: measured_prefix(blocks, k) for k in KINDS}
    art = BoundArtifact(
        model=MODEL, prompts=PROMPTS,
        options=BoundOptionsRecord(radius=None, empirical_tokens=2, power_iters=8, pieces=1),
        block_certificates={str(c.block_index): c.digest for c in certs}, blocks=blocks,
        claimed_bound={k: decimal_str(v) for k, v in claimed.items()},
        bounds=tuple(KindBound(kind=k, sound=k in SOUND_KINDS, description=KIND_DESCRIPTIONS[k],
                               claimed_bound=decimal_str(claimed[k]), log10_bound=log10(prefix[k][-1]), ratio=None,
                               log10_ratio=None, prefix_log10_bound=tuple(log10(b) for b in prefix[k]),
                               prefix_measured=tuple(measured[k]))
                     for k in KINDS),
        measured_deviation=dev[-1], measured_prefix=tuple(dev), measured_deviation_stitch=None,
        ratios={k: None for k in KINDS}, formal_kind=bs["formal_kind"],
    ).sealed()
    problems = claim_problems(art)
    assert not problems, problems  # the spec's numbers must make a bound.json `blockcert verify` accepts
    write_model_file(run_dir / "bound.json", art)


def materialize(name: str, root: Path, specs: Path = SPECS) -> Path:
    """Write the run of spec `name` to `root/name` and return that directory."""
    spec = json.loads((specs / f"{name}.json").read_text(encoding="utf-8"))
    run_dir = root / name
    policy, thresholds = Policy(**spec["policy"]), Thresholds()
    certs = [_certificate(b, policy, thresholds) for b in spec["blocks"]]
    for c in certs:
        write_model_file(layout.block_dir(run_dir, c.block_index) / layout.CERTIFICATE, c)
    write_model_file(run_dir / layout.SUMMARY, summary_of(MODEL, PROMPTS, thresholds, policy, certs))
    if spec.get("bound") is not None:
        _bound(run_dir, spec, certs)
    if spec.get("full_model") is not None:
        _full_model(run_dir, spec, certs)
    reseal_run(run_dir)  # the sealed manifest lists every file written above
    return run_dir
