"""`blockcert bound RUN_DIR`: replay the stitched model block by block, bound every block, compose exactly.

One streaming pass over the layers. At block i the native input x_i is the certified trace (or the native
model's stream, for blocks the run does not hold); the stitched input x̂_i is the previous surrogate's
output. From the pair come the per-token radii of the local set, the trajectory constant and the
measured deviations; from the block's IR, the sound constants (global and local) and the empirical lower
estimate. The instantiated bound Σ ε_i Π_{j>i} L_j is then computed per kind in exact rationals
(exact.py), and a sound kind whose bound falls below a measured deviation stops everything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import torch

from blockcert.arch.loading import load_run_model
from blockcert.arch.native import NativeModel
from blockcert.bounds.block import (
    GlobalBound,
    LocalBound,
    ball,
    global_bound,
    local_bound,
    segment_cover,
    weighted_ball,
)
from blockcert.bounds.empirical import jacobian_norm_lower
from blockcert.bounds.metric import token_weights, weighted_distance
from blockcert.bounds.norm import radial
from blockcert.bounds.trajectory import trajectory_terms
from blockcert.bounds.weights import prepare_block
from blockcert.core.exact import decimal_str, to_fraction
from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR
from blockcert.errors import BlockCertError
from blockcert.present.bounds import markdown
from blockcert.present.bounds import plot as draw
from blockcert.present.progress import say, track
from blockcert.records.bound import (
    BOUND_FILE,
    BOUND_PLOT,
    BOUND_TABLE,
    FORMAL_KINDS,
    KIND_DESCRIPTIONS,
    KIND_NEEDS,
    KINDS,
    SOUND_KINDS,
    BlockBound,
    BoundArtifact,
    BoundOptionsRecord,
    Constant,
    KindBound,
    bound_record,
)
from blockcert.records.bound_claims import claimed, kind_prefixes, log10, measured_prefix, violations
from blockcert.records.fullmodel import CERTIFICATE_FILE
from blockcert.store.files import atomic_write_bytes, atomic_write_json, sha256_file
from blockcert.store.manifest import record_outputs
from blockcert.store.records_io import write_model_file
from blockcert.store.run_reader import (
    block_certificate,
    certified_batch,
    load_certified_ir,
    load_certified_prompt_epsilons,
    load_certified_traces,
    load_full_certificate,
    load_run_summary,
)
from blockcert.surrogates import densify

EXACT_FUNCTION = ("the surrogate B̂_i is the real-valued function its (dense) IR declares; the float32 replay's "
                  "forward error at the stitched input is bounded a posteriori (enclosure) and added to ε_i, so the "
                  "theorem's hypotheses hold for the shifted surrogate B̂_i + Δ_i whose value at x̂_i is the replay's")
CENTER_NOTE = ("float64 rounding of every center quantity of the local and metric kinds is enclosed: the attention "
               "center (queries, keys, values, rotations, scores, probabilities, covariances, output) by "
               "midpoint-radius enclosures of the exact values, the mid-block residual and the segment boxes' "
               "centers as extra set radius, the norm outputs through eta, the MLP pre-activations and folded "
               "biases through their radii, kappa from a rigorous lower bound of the radial part; every "
               "combination is rounded up by gamma of its counted operations (no relative margin); torch's "
               "float64 exp, expm1 and sqrt are taken as accurate to 1e-12 relative")
EXACT_NOTE = f"{EXACT_FUNCTION}; {CENTER_NOTE}"
METRIC_BALL = 2.0  # the metric kind's ball: twice the traced-to-stitched distance, so it covers untraced inputs


@dataclass(frozen=True)
class BoundOptions:
    run_dir: Path
    radius: float | None = None
    model: str | None = None
    empirical_tokens: int = 2
    power_iters: int = 8
    threads: int = 1  # torch intra-op threads; the bound's many small operations run fastest on one
    pieces: int = 8  # boxes covering each segment [x_i, x̂_i] (more: tighter and slower)
    kinds: tuple[str, ...] = KINDS  # which kinds to compute (the enclosed replay that all compose always runs)


@dataclass(frozen=True)
class BlockResult:
    index: int
    stitched: bool
    epsilon: float
    d_in: float
    d_out: float
    radius: float
    local: LocalBound | None  # None: kind not computed (`--kinds`)
    glob: GlobalBound | None
    pointwise: tuple[float, ...]  # per prompt; the block's pointwise constant is their max
    eps_prompts: tuple[float, ...]  # certified ε per prompt (0 for a native block)
    d_out_prompts: tuple[float, ...]
    empirical: float
    trajectory: float | None
    eps_composed: tuple[float, ...]  # per prompt: what every kind composes (trajectory.py)
    eps_real: tuple[float, ...]
    replay_error: tuple[float, ...]
    metric: tuple[float, ...]  # per prompt: L_i from d_i to d_{i+1} on the ball of radius ρ_i
    metric_weights_in: tuple[tuple[float, ...], ...]
    metric_radius: tuple[float, ...]
    eps_metric: tuple[float, ...]
    d_out_metric: tuple[float, ...]


def token_dist(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """‖a_t − b_t‖₂ per prompt and token in float64 [P, T] (0 at padding)."""
    e = (a.to(torch.float64) - b.to(torch.float64)).norm(dim=-1)
    return torch.where(valid, e, torch.zeros((), dtype=torch.float64))


def _prefix_lengths(valid: torch.Tensor) -> list[int]:
    lengths = valid.sum(-1).tolist()
    for p, n in enumerate(lengths):
        if not bool(valid[p, :n].all()):
            raise BlockCertError(f"prompt {p}: valid tokens are not a prefix (left padding?); not supported")
    return lengths


def _check_radius(radius: float, i: int, x: torch.Tensor, tok_in: torch.Tensor, valid: torch.Tensor,
                  kind: str) -> None:
    worst = float(tok_in.max())
    if radius < worst:
        raise BlockCertError(
            f"--radius {radius:g} does not contain the stitched trajectory: at block {i} a token is at "
            f"distance {worst:.6g} from its traced input; use --radius ≥ the largest such distance or omit it"
        )
    norms = radial(kind, x.to(torch.float64))[valid]
    if radius >= float(norms.min()):
        raise BlockCertError(
            f"--radius {radius:g} reaches zero norm at block {i} (a token's norm-layer input has norm "
            f"{float(norms.min()):.6g}); a ball around it has no useful Lipschitz bound: use a smaller --radius"
        )


def _candidates(local: LocalBound, lengths: list[int], k: int) -> torch.Tensor:
    """Per prompt the k tokens whose sound per-token bound is largest (where the Jacobian is likely largest)."""
    rows = []
    for per, n in zip(local.per_token, lengths, strict=True):
        top = torch.topk(per, min(k, n)).indices
        rows.append(torch.cat([top, top[:1].expand(k - len(top))]))
    return torch.stack(rows)


class _Source:
    """Where block i comes from: the run's certified surrogate, or (when the run lacks it) the native block."""

    def __init__(self, opts: BoundOptions):
        self.opts = opts
        self.summary = load_run_summary(opts.run_dir)
        self.have = {e.index for e in self.summary.blocks}
        self.n_layers = self.summary.model.num_layers
        missing = [i for i in range(self.n_layers) if i not in self.have]
        self.native: NativeModel | None = None
        self.ctx = None
        self.x0 = None
        if missing:
            if opts.model is None:
                raise BlockCertError(
                    f"the run holds surrogates for {len(self.have)} of {self.n_layers} blocks; the stitched replay "
                    f"needs the native model for the others: pass --model (the run's model is "
                    f"{self.summary.model.name!r})"
                )
            lm = load_run_model(self.summary, opts.model, "cpu")
            self.native = NativeModel(lm)
            batch = certified_batch(opts.run_dir, self.summary, lm.pad_token_id)
            self.x0, self.ctx = self.native.embed(batch)
            self.valid, self.positions = batch.valid, batch.positions

    def block(self, i: int, x_native: torch.Tensor | None):
        """(IR, x_i, x_{i+1}, the block as a function, ε_i per prompt, its certificate or None if native)."""
        if i in self.have:
            cert = block_certificate(self.opts.run_dir, self.summary, i)
            if cert.metrics.epsilon is None:
                raise BlockCertError(f"block {i}: its certificate records non-finite errors; no bound exists")
            ir = load_certified_ir(self.opts.run_dir, cert)
            trace, _ = load_certified_traces(self.opts.run_dir, cert)
            self.valid, self.positions = trace.valid, trace.positions
            valid, positions = trace.valid, trace.positions

            def surrogate(z: torch.Tensor) -> torch.Tensor:
                return run_block(ir, z, valid, positions)

            eps = load_certified_prompt_epsilons(self.opts.run_dir, cert)
            return densify(ir), trace.x_in, trace.x_out, surrogate, eps, cert  # bounds read the dense form
        native, ctx = self.native, self.ctx
        x_in = self.x0 if x_native is None else x_native
        ir = native.extract_ir(i)

        def native_block(z: torch.Tensor) -> torch.Tensor:
            return native.block(i, z, ctx)

        return ir, x_in, native_block(x_in), native_block, (0.0,) * int(self.valid.shape[0]), None


# The kinds that bound the block on a set (Lipschitz analysis of attention, norms and MLP), which know only
# the Llama / GPT-2 block; the trajectory kinds need only the enclosed replay, which knows every IR op.
LIPSCHITZ_KINDS = ("global", "local", "metric", "empirical")


def select_kinds(kinds) -> tuple[str, ...]:
    """`--kinds`, checked and put in KINDS order: known names, their prerequisites, and one formal kind."""
    kinds = tuple(dict.fromkeys(kinds))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise BlockCertError(f"--kinds: unknown kind {unknown[0] if unknown else '(none given)'!r}; use a "
                             f"comma-separated list of {', '.join(KINDS)}")
    for k in kinds:
        for need in KIND_NEEDS.get(k, ()):
            if need not in kinds:
                raise BlockCertError(f"--kinds: {k} needs {need} (add it to the list)")
    if not any(k in FORMAL_KINDS for k in kinds):
        raise BlockCertError(f"--kinds: include at least one of {', '.join(FORMAL_KINDS)} (the formal check needs "
                             "a sound kind with one constant per block)")
    return tuple(k for k in KINDS if k in kinds)


def _bounded_ir(i: int, ir: BlockIR, kinds: tuple[str, ...]) -> BlockIR:
    """The IR the bounds read (already dense: `_Source.block` applies `densify`; the a-posteriori ε and
    forward-error terms make any rounding of that step part of what is bounded). The set kinds know only the
    causal mask and plain pre-norm blocks; the trajectory kinds enclose every op the interpreter has."""
    if not any(k in LIPSCHITZ_KINDS for k in kinds):
        return ir
    spec = ir.spec
    norms = [spec.attn_norm, spec.mlp_norm, spec.post_attn_norm, spec.post_mlp_norm, spec.attention.qk_norm]
    if spec.attention.qk_norm is not None or spec.post_attn_norm is not None or any(
            n is not None and n.unit_offset for n in norms):
        raise BlockCertError(f"block {i}: q/k norms, sandwich norms and (1 + w) RMSNorm (Qwen3, Gemma 3) have no "
                             "Lipschitz rule yet for the kinds global, local, metric, empirical; use "
                             "--kinds pointwise,per_prompt,trajectory")
    if ir.spec.attention.window is not None:
        raise BlockCertError(f"block {i} attends through a sliding window of {ir.spec.attention.window}: the local "
                             "and global bounds assume the full causal mask; use --kinds pointwise,per_prompt,"
                             "trajectory")
    if ir.spec.attention.pattern != "causal":
        raise BlockCertError(f"block {i}: attention pattern {ir.spec.attention.pattern!r}; the Lipschitz kinds "
                             "support only the causal pattern; use --kinds pointwise,per_prompt,trajectory")
    return ir


def _metric_block(prep, x, x_hat, terms, y_hat, x_next, w_in, w_out, radius, valid, positions, lengths):
    """Kind metric for one block, per prompt: L from d_i (weights w_in) to d_{i+1} (w_out) on the ball of radius
    ρ_p (in d_i) around x_i; the ball must contain x̂_i (it does whenever the composed bound before this block
    holds, which is checked, so a failure here is a bug)."""
    d_in = weighted_distance(token_dist(x_hat, x, valid), w_in)
    lips = []
    for p, n in enumerate(lengths):
        if float(d_in[p]) > radius[p]:
            raise BlockCertError(f"metric kind: the stitched input of prompt {p} is at d_i = {float(d_in[p]):.9g}, "
                                 f"outside the ball of radius {radius[p]:.9g}: a bug (the composed bound failed)")
        nb = weighted_ball(x[p, :n], radius[p], w_in[p, :n], w_out[p, :n], positions[p, :n])
        lips.append(local_bound(prep, [nb]).lipschitz)
    eps = terms.epsilon(w_out)
    d_out = weighted_distance(token_dist(y_hat, x_next, valid), w_out)
    return tuple(lips), tuple(eps.tolist()), tuple(d_out.tolist())


def _analyse_block(i, ir: BlockIR, x, x_next, x_hat, surrogate, eps_prompts, cert, opts, valid, positions,
                   lengths, w_in, w_out, metric_radius):
    eps = max(eps_prompts)
    with torch.no_grad():
        y_hat, y_nat = surrogate(x_hat), surrogate(x)
    tok_in = token_dist(x_hat, x, valid)
    eps_replay = float(token_dist(y_nat, x_next, valid).max())
    if cert is not None and abs(eps_replay - eps) > cert.tolerances.replay_atol:
        raise BlockCertError(
            f"block {i}: replaying the surrogate gives ε = {eps_replay:.9g}, its certificate says {eps:.9g}; "
            "run `blockcert verify` on the run"
        )
    kinds = opts.kinds
    ir = _bounded_ir(i, ir, kinds)
    den = tok_in.amax(-1)
    num = token_dist(y_hat, y_nat, valid).amax(-1)
    ratios = [float(n / d) for n, d in zip(num, den, strict=True) if d > 0]
    d_out = tuple(token_dist(y_hat, x_next, valid).amax(-1).tolist())
    if opts.radius is None:
        radius = float(tok_in.max())
    else:
        _check_radius(opts.radius, i, x, tok_in, valid, ir.spec.attn_norm.kind)
        radius = opts.radius
    prep = prepare_block(ir) if any(k in kinds for k in ("global", "local", "metric")) else None
    local = glob = None
    if "local" in kinds:
        if opts.radius is None:
            sets = [segment_cover(x[p, :n], x_hat[p, :n], positions[p, :n], opts.pieces)
                    for p, n in enumerate(lengths)]
        else:
            sets = [ball(x[p, :n], opts.radius, positions[p, :n]) for p, n in enumerate(lengths)]
        local = local_bound(prep, sets)
    if "global" in kinds:
        glob = global_bound(prep)
    terms = trajectory_terms(ir, x, x_hat, x_next, y_hat, valid, positions)
    metric, eps_metric, d_out_metric = ((), (), ())
    if "metric" in kinds:
        metric, eps_metric, d_out_metric = _metric_block(prep, x, x_hat, terms, y_hat, x_next, w_in, w_out,
                                                         metric_radius, valid, positions, lengths)
    emp = jacobian_norm_lower(ir, x, valid, positions, _candidates(local, lengths, opts.empirical_tokens),
                              opts.power_iters) if "empirical" in kinds and opts.empirical_tokens > 0 \
        else torch.zeros(1)
    res = BlockResult(
        index=i, stitched=cert is not None, epsilon=eps, d_in=float(den.max()), d_out=max(d_out),
        radius=radius, local=local, glob=glob, pointwise=tuple(terms.ratio.tolist()), eps_prompts=tuple(eps_prompts),
        d_out_prompts=d_out, empirical=float(emp.max()), trajectory=max(ratios) if ratios else None,
        eps_composed=tuple(terms.epsilon().tolist()), eps_real=tuple((terms.eps_tok.amax(-1)).tolist()),
        replay_error=tuple(terms.fwd_tok.amax(-1).tolist()), metric=metric,
        metric_weights_in=tuple(tuple(w_in[p, :n].tolist()) for p, n in enumerate(lengths)) if metric else (),
        metric_radius=tuple(metric_radius) if metric else (), eps_metric=eps_metric, d_out_metric=d_out_metric,
    )
    return res, y_hat


def analyse_run(opts: BoundOptions) -> tuple[_Source, list[BlockResult]]:
    if opts.radius is not None and not (math.isfinite(opts.radius) and opts.radius >= 0):
        raise BlockCertError(f"--radius must be a finite number ≥ 0, not {opts.radius}")
    if opts.empirical_tokens < 0 or opts.power_iters < 1 or opts.pieces < 1:
        raise BlockCertError("--empirical-tokens must be ≥ 0, --power-iters ≥ 1 and --pieces ≥ 1")
    if opts.threads < 1:
        raise BlockCertError("--threads must be at least 1")
    opts = replace(opts, kinds=select_kinds(opts.kinds))
    src = _Source(opts)
    results, x_hat, x_native = [], None, None
    before = torch.get_num_threads()
    torch.set_num_threads(opts.threads)
    try:
        for i in track(range(src.n_layers), "bounding blocks", total=src.n_layers):
            ir, x, x_next, surrogate, eps, cert = src.block(i, x_native)
            valid, positions = src.valid, src.positions
            lengths = _prefix_lengths(valid)
            if x_hat is None:
                x_hat = x
            w_in = token_weights(x, valid)
            # The metric ball: METRIC_BALL times the traced-to-stitched distance in d_i, per prompt (rounded up).
            metric_radius = (weighted_distance(token_dist(x_hat, x, valid), w_in) * METRIC_BALL
                             * (1 + 1e-6)).tolist()
            last = i == src.n_layers - 1
            w_out = torch.ones_like(w_in) if last else token_weights(x_next, valid)
            res, x_hat = _analyse_block(i, ir, x, x_next, x_hat, surrogate, eps, cert, opts, valid, positions,
                                        lengths, w_in, w_out, metric_radius)
            results.append(res)
            x_native = x_next
    finally:
        torch.set_num_threads(before)
    return src, results


def _constants(r: BlockResult, opts: BoundOptions, kinds: tuple[str, ...]) -> tuple[Constant, ...]:
    """The block's constants of the computed kinds, each with the assumptions it holds under."""
    where = (f"the segment [x_i, x̂_i] from the traced to the stitched input, per prompt, covered by "
             f"{opts.pieces} boxes of per-token radius ‖x̂_t − x_t‖/{2 * opts.pieces} (rounded up)"
             if opts.radius is None else
             f"the max-token ball of radius {opts.radius:g} around the traced input x_i, per prompt, which "
             "contains x̂_i (checked on the stitched replay)")
    local_notes = [
        f"sup of the Jacobian norm over {where}; by the mean-value inequality along the segment, "
        "dist(B̂(x̂_i), B̂(x_i)) ≤ L·dist(x̂_i, x_i)",
        EXACT_NOTE,
    ]
    if r.local is not None and r.local.zero_norm:
        local_notes.append("some ball reaches zero norm at a norm layer: there its Jacobian bound is 1/√eps")
    make = {
        "global": lambda: Constant(kind="global", value=r.glob.lipschitz, sound=True, assumptions=(
            "valid for all inputs: finite because eps > 0 bounds each norm layer's Jacobian by 1/√eps and "
            "norm layers map into the ball of radius √d", EXACT_NOTE),
            parts={"k_attn": r.glob.k_attn, "k_mlp": r.glob.k_mlp}),
        "local": lambda: Constant(kind="local", value=r.local.lipschitz, sound=True, assumptions=tuple(local_notes),
                 parts={"k_attn": r.local.k_attn, "k_mlp": r.local.k_mlp,
                        "tokens_refined": float(r.local.tokens_exact)}),
        "metric": lambda: Constant(kind="metric", value=max(r.metric), sound=True, per_prompt=r.metric, assumptions=(
            "per prompt: sup of the Jacobian's operator norm from d_i to d_{i+1} over the ball {Y : d_i(Y, x_i) ≤ ρ_i} "
            f"(ρ_i = {METRIC_BALL:g} × d_i(x̂_i, x_i), recorded per prompt, so the ball contains x̂_i and every input "
            "up to twice as far), where d_i(X, Y) = max_t w_{i,t}‖X_t − Y_t‖, "
            "w_{i,t} = 1/max(‖x_{i,t}‖, median_s ‖x_{i,s}‖) fitted on the traces (recorded), "
            "and d_L is the max-token distance; composed with ε_i measured in d_{i+1}",
            "a Lipschitz bound on a stated ball: it holds for every input of that ball, traced or not",
            EXACT_NOTE)),
        "pointwise": lambda: Constant(kind="pointwise", value=max(r.pointwise), sound=True, assumptions=(
            "TRAJECTORY CERTIFICATE: an upper bound on dist(B̂(x̂_i), B̂(x_i)) / dist(x̂_i, x_i) at this run's traced "
            "and stitched inputs only, max over prompts: exactly the pointwise hypothesis (TrajHyp) of the "
            "composition theorem for this measured stitched run; not a Lipschitz constant on any set, and it says "
            "nothing about any input that was not traced; 0 where x̂_i = x_i (the hypothesis then holds for every L)",
            "both points evaluated in float64 midpoint-radius arithmetic with every rounding bounded (γ_n of each "
            "sum's own length); torch's float64 exp, sqrt and activations assumed accurate to 1e-12 relative",
            EXACT_FUNCTION)),
        "per_prompt": lambda: Constant(kind="per_prompt", value=max(r.pointwise), sound=True, per_prompt=r.pointwise,
                                       assumptions=(
            "TRAJECTORY CERTIFICATE: the pointwise constants of each prompt (`per_prompt`), composed prompt by "
            "prompt with that prompt's composed ε and maximised over prompts at the end: valid only at the traced "
            "points of this measured stitched run",
            "the pointwise kind's assumptions")),
        "empirical": lambda: Constant(kind="empirical", value=r.empirical, sound=False, assumptions=(
            "LOWER estimate of the surrogate's Jacobian norm (max-token distance) at the traced inputs, by "
            "alternating power iteration through autograd; never an upper bound",
            f"{opts.empirical_tokens} candidate output tokens per prompt, {opts.power_iters} iterations")),
        "trajectory": lambda: Constant(kind="trajectory", value=r.trajectory, sound=False, assumptions=(
            "dist(B̂(x̂_i), B̂(x_i)) / dist(x̂_i, x_i) along this stitched replay, max over prompts: exactly "
            "what the pointwise form of the theorem needs for this trajectory; measured in floating point",
            "undefined (null) where x̂_i = x_i")),
    }
    return tuple(make[k]() for k in kinds)


def check_sound(blocks) -> None:
    """Stop (nothing written) where a sound kind's bound is below the measured deviation after some prefix."""
    found = violations(blocks)
    if found:
        raise BlockCertError(f"{found[0]}: a bug or a violated hypothesis (nothing written)")
    traj = kind_prefixes(blocks).get("trajectory", [])
    for k, (b, m) in enumerate(zip(traj, measured_prefix(blocks, "trajectory"), strict=False), start=1):
        if to_fraction(m) > b * (1 + Fraction(1, 10**5)):
            say(f"note: after {k} blocks the trajectory-constant bound {float(b):.6g} is below the measured "
                f"{m:.6g} (float rounding of the replay; the trajectory kind makes no soundness claim)")


def _kind_bound(kind: str, prefix: list[Fraction], measured: float, prefix_measured: list[float]) -> KindBound:
    c = claimed(prefix)
    m = to_fraction(measured)
    ratio_q = c / m if m > 0 else None
    lr = log10(ratio_q) if ratio_q is not None else None
    return KindBound(
        kind=kind, sound=kind in SOUND_KINDS, description=KIND_DESCRIPTIONS[kind], claimed_bound=decimal_str(c),
        log10_bound=log10(c), ratio=float(ratio_q) if lr is not None and lr < 300 else None, log10_ratio=lr,
        prefix_log10_bound=tuple(log10(b) for b in prefix), prefix_measured=tuple(prefix_measured),
    )


def build_artifact(src: _Source, results: list[BlockResult], opts: BoundOptions,
                   stitch_measured: float | None) -> BoundArtifact:
    kinds = select_kinds(opts.kinds)
    blocks = tuple(
        BlockBound(index=r.index, stitched=r.stitched, epsilon=r.epsilon, input_deviation=r.d_in,
                   output_deviation=r.d_out, radius=r.radius, epsilon_per_prompt=r.eps_prompts,
                   output_deviation_per_prompt=r.d_out_prompts, epsilon_composed=max(r.eps_composed),
                   epsilon_composed_per_prompt=r.eps_composed, epsilon_real_per_prompt=r.eps_real,
                   replay_error_per_prompt=r.replay_error, metric_weights_in=r.metric_weights_in,
                   metric_radius_per_prompt=r.metric_radius, epsilon_metric_per_prompt=r.eps_metric,
                   output_deviation_metric_per_prompt=r.d_out_metric, constants=_constants(r, opts, kinds))
        for r in results
    )
    measured = [b.output_deviation for b in blocks]
    prefix = kind_prefixes(blocks)
    check_sound(blocks)
    bounds = {k: _kind_bound(k, prefix[k], measured[-1], measured_prefix(blocks, k)) for k in kinds}
    formal = min((k for k in FORMAL_KINDS if k in kinds), key=lambda k: prefix[k][-1])
    digests = {str(e.index): e.digest for e in src.summary.blocks}
    return BoundArtifact(
        model=src.summary.model, prompts=src.summary.prompts,
        options=BoundOptionsRecord(radius=opts.radius, empirical_tokens=opts.empirical_tokens,
                                   power_iters=opts.power_iters, pieces=opts.pieces),
        kinds=kinds, block_certificates=digests, blocks=blocks,
        claimed_bound={k: v.claimed_bound for k, v in bounds.items()},
        bounds=tuple(bounds.values()), measured_deviation=measured[-1], measured_prefix=tuple(measured),
        measured_deviation_stitch=stitch_measured, ratios={k: v.ratio for k, v in bounds.items()},
        formal_kind=formal,
    ).sealed()


def stitch_measured(run_dir: Path, results: list[BlockResult]) -> float | None:
    """`measured_deviation` of the run's full-model certificate, when `blockcert stitch` stitched the same blocks."""

    if not (run_dir / CERTIFICATE_FILE).is_file():
        return None
    try:
        cert = load_full_certificate(run_dir)
    except BlockCertError as e:
        say(f"note: not using {CERTIFICATE_FILE}: {e}")
        return None
    if set(cert.stitched_blocks) != {r.index for r in results if r.stitched}:
        return None
    return cert.metrics.measured_deviation


def record_in_certificate(run_dir: Path, art: BoundArtifact) -> bool:
    """Add bound.json (already written) to the run's full-model certificate, re-sealed, when that certificate
    measured the same stitched model (`measured_deviation_stitch` set); False when there is none to add it to."""

    if art.measured_deviation_stitch is None:
        return False
    cert = load_full_certificate(run_dir)
    record = bound_record(art, BOUND_FILE, sha256_file(run_dir / BOUND_FILE))
    write_model_file(run_dir / CERTIFICATE_FILE, cert.model_copy(update={"bound": record}).sealed())
    return True


def run_bound(opts: BoundOptions, plot: bool = True) -> tuple[BoundArtifact, str]:
    """`blockcert bound`: every kind of constant, composed; writes bound.json, bound.md and the plot, and records
    the bound in the full-model certificate when the run is stitched. Returns the artifact and its tables."""
    src, results = analyse_run(opts)
    art = build_artifact(src, results, opts, stitch_measured(opts.run_dir, results))
    atomic_write_json(opts.run_dir / BOUND_FILE, art.model_dump(mode="json"))
    if record_in_certificate(opts.run_dir, art):
        say(f"recorded the bound in {opts.run_dir / CERTIFICATE_FILE}")
    table = markdown(art)
    atomic_write_bytes(opts.run_dir / BOUND_TABLE, table.encode("utf-8"))
    if plot:
        draw(art, opts.run_dir / BOUND_PLOT)
    # the manifest lists every file: the bound, its table and plot, and the re-sealed full-model certificate
    record_outputs(opts.run_dir, [BOUND_FILE, BOUND_TABLE, BOUND_PLOT, CERTIFICATE_FILE])
    return art, table
