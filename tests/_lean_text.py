"""Read the numbers back out of a generated (or the hand-written Example) Lean run module, independently of
blockcert.bridge: regular expressions over the field names of BlockCert/Checker.lean's structures."""

from __future__ import annotations

import re
from fractions import Fraction

from blockcert.formal.mirror import FormalBlock, FormalPolicy, FormalPrompt, FormalRun, PerPrompt, PromptBlock

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
_PER_PROMPT = re.compile(rf"def perPrompt : PerPrompt :=\n  \{{ claimedBound := {_Q},")
_PROMPT = re.compile(rf"\{{\n        blocks := \[([^\]]*)\],\n        measuredDeviation := {_OPT} \}}")
_PAIR = re.compile(rf"⟨{_Q}, {_Q}⟩")


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
        for m in _BLOCK.finditer(text.partition("def perPrompt : PerPrompt :=")[0])
    )
    run_text, _, prompt_text = text.partition("def perPrompt : PerPrompt :=")
    claimed, measured = _CLAIMED.search(run_text), _MEASURED.search(run_text)
    assert claimed and measured, "claimedBound / measuredDeviation missing"
    per_prompt = None
    if prompt_text:
        head = _PER_PROMPT.search(text)
        assert head, "perPrompt without its claimedBound"
        prompts = tuple(
            FormalPrompt(tuple(PromptBlock(_q(q.group(1), q.group(2)), _q(q.group(3), q.group(4)))
                               for q in _PAIR.finditer(m.group(1))), _opt(m, 2))
            for m in _PROMPT.finditer(prompt_text)
        )
        per_prompt = PerPrompt(_q(head.group(1), head.group(2)), prompts)
    return FormalRun(
        name=name,
        policy=FormalPolicy(_q(pol.group(1), pol.group(2)), _q(pol.group(3), pol.group(4))),
        blocks=blocks,
        claimed_bound=_opt(claimed, 1),
        measured_deviation=_opt(measured, 1),
        per_prompt=per_prompt,
    )
