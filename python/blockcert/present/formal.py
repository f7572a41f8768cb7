"""What `blockcert check` prints: BlockCert/Report.lean's output, line for line, from the Python mirror.

Integer arithmetic only (as in Lean), so huge or tiny exact values print without a float in between.
"""

from __future__ import annotations

from fractions import Fraction

from blockcert.core.exact import int_text
from blockcert.formal.mirror import (
    FormalPolicy,
    FormalRun,
    block_ok,
    check,
    coverage_ok,
    global_bound,
    prompt_ok,
    prompt_run,
    run_problems,
)

_SIG = 6  # significant digits of the scientific notation, as `Q.toSci`


def _scale_floor(n: int, d: int, k: int) -> int:
    """⌊n / d · 10^k⌋ for n, d ≥ 0 and any integer k."""
    return n * 10**k // d if k >= 0 else n // (d * 10 ** (-k))


def q_to_sci(q: Fraction) -> str:
    """Six significant digits, truncated toward zero, like `Q.toSci` (e.g. `3.10292e-2`)."""
    n, d = abs(q.numerator), q.denominator
    if n == 0:
        return "0"
    sign = "-" if q < 0 else ""
    # The decimal exponent of n/d is (digits n − digits d) or one less.
    e0 = len(int_text(n)) - len(int_text(d))
    e = e0 - 1 if _scale_floor(n, d, _SIG - 1 - e0) < 10 ** (_SIG - 1) else e0
    m = _scale_floor(n, d, _SIG - 1 - e)
    rest = str(m % 10 ** (_SIG - 1))
    return f"{sign}{m // 10 ** (_SIG - 1)}.{'0' * (_SIG - 1 - len(rest))}{rest}e{e}"


def q_to_frac(q: Fraction) -> str:
    return f"{int_text(q.numerator)}/{int_text(q.denominator)}"


def q_pretty(q: Fraction) -> str:
    return f"{q_to_frac(q)} (≈ {q_to_sci(q)})"


def _opt_show(q: Fraction | None) -> str:
    return "none" if q is None else q_pretty(q)


def _b(x: bool) -> str:
    return "true" if x else "false"


def _block_line(p: FormalPolicy, b) -> str:
    status = "ok  " if block_ok(p, b) else "FAIL"
    return (
        f"  [{status}] block {b.index}: eps = {q_pretty(b.epsilon)}, L = {_opt_show(b.lipschitz)}, "
        f"act = {b.act_covered}/{b.n_tokens}, loss = {q_to_sci(b.loss_covered)}/{q_to_sci(b.loss_total)}, "
        f"coverage meets policy = {_b(coverage_ok(p, b))}, certified = {_b(b.certified)}"
    )


def report_lines(r: FormalRun) -> list[str]:
    """The lines `lake exe blockcert_check` prints for `r` (Report.lean `report`)."""
    lines = [
        f"run: {r.name}",
        f"policy: alpha_act = {q_pretty(r.policy.alpha_act)}, alpha_loss = {q_pretty(r.policy.alpha_loss)}",
    ]
    lines += [_block_line(r.policy, b) for b in r.blocks]
    g = global_bound(r.blocks)
    lines.append(
        "global bound: not computed (a block has no Lipschitz constant)" if g is None
        else f"global bound sum_i eps_i * prod_(j>i) L_j = {q_pretty(g)}"
    )
    lines.append(f"claimed bound: {_opt_show(r.claimed_bound)}")
    lines.append(f"measured deviation: {_opt_show(r.measured_deviation)}")
    if r.per_prompt is not None:  # Report.lean `promptLines`
        c = r.per_prompt.claimed_bound
        lines.append(f"per-prompt claimed bound: {q_pretty(c)}")
        for k, p in enumerate(r.per_prompt.prompts):
            g = global_bound(prompt_run(r, c, p, k).blocks)
            status = "ok  " if prompt_ok(r, c, p) else "FAIL"
            lines.append(f"  [{status}] prompt {k}: bound = {'not computed' if g is None else q_pretty(g)}, "
                         f"measured = {_opt_show(p.measured_deviation)}")
    if check(r):
        lines.append("verdict: PASS")
    else:
        lines.append("verdict: FAIL")
        lines += [f"  - {msg}" for msg in run_problems(r)]
    return lines
