"""Read the numbers back out of a generated (or the hand-written Example) Lean run module, independently of
blockcert.bridge: regular expressions over the field names of BlockCert/Checker.lean's structures."""

from __future__ import annotations

import re
from fractions import Fraction

from blockcert.formal.mirror import FormalBlock, FormalPolicy, FormalRun

_Q = r"⟨(-?\d+), (\d+)⟩"
_OPT = rf"(none|some {_Q})"
_POLICY = re.compile(rf"policy := ⟨{_Q}, {_Q}⟩")
_BLOCK = re.compile(
    rf"\{{ index := (\d+), epsilon := {_Q}, lipschitz := {_OPT},\s+"
    rf"actCovered := (\d+), nTokens := (\d+), lossCovered := {_Q}, lossTotal := {_Q},\s+"
    r"certified := (true|false) \}"
)
_CLAIMED = re.compile(rf"claimedBound := {_OPT}")
_MEASURED = re.compile(rf"measuredDeviation := {_OPT}")


def _q(n: str, d: str) -> Fraction:
    assert int(d) > 0, "a denominator in the module is zero"
    return Fraction(int(n), int(d))


def _opt(m: re.Match, at: int) -> Fraction | None:
    return None if m.group(at) == "none" else _q(m.group(at + 1), m.group(at + 2))


def parse_lean_run(text: str, name: str) -> FormalRun:
    pol = _POLICY.search(text)
    assert pol, "no policy in the module"
    blocks = tuple(
        FormalBlock(
            index=int(m.group(1)), epsilon=_q(m.group(2), m.group(3)), lipschitz=_opt(m, 4),
            act_covered=int(m.group(7)), n_tokens=int(m.group(8)), loss_covered=_q(m.group(9), m.group(10)),
            loss_total=_q(m.group(11), m.group(12)), certified=m.group(13) == "true",
        )
        for m in _BLOCK.finditer(text)
    )
    claimed, measured = _CLAIMED.search(text), _MEASURED.search(text)
    assert claimed and measured, "claimedBound / measuredDeviation missing"
    return FormalRun(
        name=name,
        policy=FormalPolicy(_q(pol.group(1), pol.group(2)), _q(pol.group(3), pol.group(4))),
        blocks=blocks,
        claimed_bound=_opt(claimed, 1),
        measured_deviation=_opt(measured, 1),
    )
