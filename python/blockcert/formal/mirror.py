"""The exact-rational mirror of the Lean checker (BlockCert/Checker.lean), so the project checks without Lean.

A `FormalRun` holds the numbers a generated Lean module states about a run: per block ε, L, the
coverage counts and weights and the certified flag; the policy; the claimed global bound and the
measured end-to-end deviation; and, when the run carries them (bound.json's `per_prompt` kind), one
prompt's ε_i and L_i per block for every prompt with the claimed per-prompt bound (Lean's `PerPrompt`,
checked by `checkPrompts`: each prompt is a `Run` of its own, so `check_sound` applies to it
unchanged). `check` is true exactly when Lean's `check` is: every number here is a
`fractions.Fraction`, whose denominator is always positive, so Lean's `valid` (den ≠ 0) holds by
construction and its cross-multiplied comparisons, sums and products on unnormalised `Q` agree with
Fraction's. The messages of `run_problems` are those of BlockCert/Report.lean, word for word.

Building a formal run from a run directory lives in formal_build.py; reading and writing
`formal_run.json` in formal_json.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

FORMAT = "blockcert.formal/2"  # /2 adds the optional `per_prompt` part; /1 files are still read (without it)
FORMAT_V1 = "blockcert.formal/1"
FORMAL_FILE = "formal_run.json"


@dataclass(frozen=True)
class FormalPolicy:
    alpha_act: Fraction
    alpha_loss: Fraction


@dataclass(frozen=True)
class FormalBlock:
    """One block in layer order; `lipschitz` is None until the run carries a Lipschitz constant for it."""

    index: int
    epsilon: Fraction
    lipschitz: Fraction | None
    act_covered: int
    n_tokens: int
    loss_covered: Fraction
    loss_total: Fraction
    certified: bool


@dataclass(frozen=True)
class PromptBlock:
    """One prompt's ε_i and L_i for the run's block at the same position (Lean's `PromptBlock`)."""

    epsilon: Fraction
    lipschitz: Fraction


@dataclass(frozen=True)
class FormalPrompt:
    """One prompt: its constants for every block of the run, in order, and its measured deviation."""

    blocks: tuple[PromptBlock, ...]
    measured_deviation: Fraction | None


@dataclass(frozen=True)
class PerPrompt:
    """The per-prompt bound: one claim (the max over prompts, rounded up) that every prompt must meet."""

    claimed_bound: Fraction
    prompts: tuple[FormalPrompt, ...]


@dataclass(frozen=True)
class FormalRun:
    name: str
    policy: FormalPolicy
    blocks: tuple[FormalBlock, ...]
    claimed_bound: Fraction | None
    measured_deviation: Fraction | None
    per_prompt: PerPrompt | None = None  # None: the run states no per-prompt bound


def _valid(q: Fraction) -> bool:
    # Lean's `Q.valid` (den ≠ 0). A Fraction cannot have a zero denominator; kept so each condition of
    # Lean's `check` has its counterpart here.
    return q.denominator > 0


def act_coverage_ok(p: FormalPolicy, b: FormalBlock) -> bool:
    """`act_covered / n_tokens ≥ α_act` with `n_tokens > 0`, by cross-multiplication as in Lean."""
    return b.n_tokens > 0 and p.alpha_act.numerator * b.n_tokens <= b.act_covered * p.alpha_act.denominator


def loss_coverage_ok(p: FormalPolicy, b: FormalBlock) -> bool:
    """`loss_covered ≥ α_loss · loss_total`."""
    return p.alpha_loss * b.loss_total <= b.loss_covered


def coverage_ok(p: FormalPolicy, b: FormalBlock) -> bool:
    """What the certified flag must say, given the coverages and the policy."""
    return act_coverage_ok(p, b) and loss_coverage_ok(p, b)


def lip_ok(lip: Fraction | None) -> bool:
    return lip is None or (_valid(lip) and lip >= 0)


def block_ok(p: FormalPolicy, b: FormalBlock) -> bool:
    return (
        _valid(b.epsilon) and b.epsilon >= 0 and lip_ok(b.lipschitz)
        and _valid(b.loss_covered) and _valid(b.loss_total) and b.certified == coverage_ok(p, b)
    )


def policy_ok(p: FormalPolicy) -> bool:
    return _valid(p.alpha_act) and _valid(p.alpha_loss)


def _opt_valid(q: Fraction | None) -> bool:
    return q is None or _valid(q)


def global_bound(blocks: Sequence[FormalBlock]) -> Fraction | None:
    """Lean's `globalBound`: b ← L_i·b + ε_i from 0 in layer order (= Σ_i ε_i Π_{j>i} L_j); None as soon as a
    block has no Lipschitz constant.

    The recursion is written out rather than taken from `exact.global_bound` because it must mirror Lean on
    every input, violating ones included: `exact.global_bound` refuses negative ε or L, Lean computes on
    (and `blockcert check` prints the bound of) a run with a negative ε. On non-negative inputs the two agree
    exactly (tests/test_formal.py checks it).
    """
    b = Fraction(0)
    for blk in blocks:
        if blk.lipschitz is None:
            return None
        b = blk.lipschitz * b + blk.epsilon
    return b


def bound_ok(bound: Fraction | None, claimed: Fraction | None) -> bool:
    """If the bound is computable, a claim must be present and at least as large."""
    return bound is None or (claimed is not None and bound <= claimed)


def measured_ok(measured: Fraction | None, claimed: Fraction | None) -> bool:
    """If a deviation was measured, a claim must be present and at least as large."""
    return measured is None or (claimed is not None and measured <= claimed)


def check_run(r: FormalRun) -> bool:
    """Lean's `check r` on the run alone (its per-prompt part aside)."""
    return (
        all(block_ok(r.policy, b) for b in r.blocks) and policy_ok(r.policy)
        and _opt_valid(r.claimed_bound) and _opt_valid(r.measured_deviation)
        and bound_ok(global_bound(r.blocks), r.claimed_bound)
        and measured_ok(r.measured_deviation, r.claimed_bound)
    )


# ---- the per-prompt part (Lean's `PerPrompt`, `promptRun`, `checkPrompts`) ---------------------------


def prompt_blocks(blocks: Sequence[FormalBlock], prompt: FormalPrompt) -> tuple[FormalBlock, ...]:
    """Lean's `promptBlocks`: the run's blocks with one prompt's ε and L. Coverage is checked once, on the run
    itself, so these carry none (0 tokens, certified = false, which is what `check` demands of no coverage).
    Like Lean's recursion it stops at the shorter list; `same_length` is checked beside it."""
    zero = Fraction(0)
    return tuple(FormalBlock(index=b.index, epsilon=q.epsilon, lipschitz=q.lipschitz, act_covered=0, n_tokens=0,
                             loss_covered=zero, loss_total=zero, certified=False)
                 for b, q in zip(blocks, prompt.blocks, strict=False))


def prompt_run(r: FormalRun, c: Fraction, prompt: FormalPrompt, k: int) -> FormalRun:
    """Lean's `promptRun r c p`: prompt `k` as a run of its own that claims `c`."""
    return FormalRun(name=f"{r.name} prompt {k}", policy=r.policy, blocks=prompt_blocks(r.blocks, prompt),
                     claimed_bound=c, measured_deviation=prompt.measured_deviation)


def same_length(r: FormalRun, prompt: FormalPrompt) -> bool:
    return len(r.blocks) == len(prompt.blocks)


def prompt_ok(r: FormalRun, c: Fraction, prompt: FormalPrompt) -> bool:
    """Lean's `promptOk`: as many values as blocks, the prompt's run checks, and its bound is computable."""
    pr = prompt_run(r, c, prompt, 0)
    return same_length(r, prompt) and check_run(pr) and global_bound(pr.blocks) is not None


def check_prompts(r: FormalRun, pp: PerPrompt) -> bool:
    """Lean's `checkPrompts r pp`."""
    return _valid(pp.claimed_bound) and all(prompt_ok(r, pp.claimed_bound, p) for p in pp.prompts)


def check(r: FormalRun) -> bool:
    """Lean's `checkFormal r pp`: the hypotheses of the composition theorem hold for the run's numbers, and for
    every prompt's numbers when the run states a per-prompt bound."""
    return check_run(r) and (r.per_prompt is None or check_prompts(r, r.per_prompt))


def has_prompt_theorem(r: FormalRun) -> bool:
    """The generated module states `per_prompt_bound` exactly when the run carries a per-prompt part."""
    return r.per_prompt is not None


def has_bound_theorem(r: FormalRun) -> bool:
    """The generated module states `global_bound` only when every block has L and a bound is claimed."""
    return all(b.lipschitz is not None for b in r.blocks) and r.claimed_bound is not None


def block_problems(p: FormalPolicy, b: FormalBlock) -> list[str]:
    pre = f"block {b.index}: "
    out = []
    if not _valid(b.epsilon):
        out.append(pre + "epsilon has a zero denominator")
    if not b.epsilon >= 0:
        out.append(pre + "epsilon is negative")
    if not lip_ok(b.lipschitz):
        out.append(pre + "the Lipschitz constant is negative or has a zero denominator")
    if not (_valid(b.loss_covered) and _valid(b.loss_total)):
        out.append(pre + "a loss value has a zero denominator")
    cov = coverage_ok(p, b)
    if b.certified != cov:
        out.append(pre + f"certified = {_lean_bool(b.certified)}, but the coverages against the policy give "
                   f"{_lean_bool(cov)}")
    return out


def run_problems(r: FormalRun) -> list[str]:
    """Why `check r` fails, one line each, in Report.lean's order and words; empty iff `check r`."""
    out = _run_only_problems(r)
    if r.per_prompt is not None:
        out += prompt_problems(r, r.per_prompt)
    return out


def prompt_problems(r: FormalRun, pp: PerPrompt) -> list[str]:
    """Report.lean's `perPromptProblems`: each prompt's problems, prefixed `prompt k: `."""
    out = [] if _valid(pp.claimed_bound) else ["per_prompt.claimed_bound has a zero denominator"]
    for k, p in enumerate(pp.prompts):
        pre = f"prompt {k}: "
        if not same_length(r, p):
            out.append(pre + f"{len(p.blocks)} block values for the run's {len(r.blocks)} blocks")
        out += [pre + m for m in _run_only_problems(prompt_run(r, pp.claimed_bound, p, k))]
    return out


def _run_only_problems(r: FormalRun) -> list[str]:
    out = [] if policy_ok(r.policy) else ["policy: an alpha has a zero denominator"]
    for b in r.blocks:
        out += block_problems(r.policy, b)
    if not _opt_valid(r.claimed_bound):
        out.append("claimed_bound has a zero denominator")
    if not _opt_valid(r.measured_deviation):
        out.append("measured_deviation has a zero denominator")
    if not bound_ok(global_bound(r.blocks), r.claimed_bound):
        out.append("claimed_bound is missing although every block has a Lipschitz constant" if r.claimed_bound is None
                   else "claimed_bound is below the computed global bound")
    if not measured_ok(r.measured_deviation, r.claimed_bound):
        out.append("measured_deviation is given but claimed_bound is missing" if r.claimed_bound is None
                   else "measured_deviation exceeds claimed_bound")
    return out


def _lean_bool(b: bool) -> str:
    return "true" if b else "false"
