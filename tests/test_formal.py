"""The Python mirror of the Lean checker: exact numbers, each violation rejected, real runs accepted,
`formal_run.json` read and written exactly, and `blockcert check` behaving like `lake exe blockcert_check`."""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import replace
from decimal import ROUND_DOWN, Context, Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from blockcert.core.exact import global_bound as exact_global_bound
from blockcert.formal.mirror import (
    FormalBlock,
    FormalPrompt,
    FormalRun,
    PerPrompt,
    PromptBlock,
    check,
    coverage_ok,
    global_bound,
    has_bound_theorem,
    prompt_blocks,
    run_problems,
)
from blockcert.present.formal import q_pretty, q_to_sci, report_lines
from blockcert.store.formal_inputs import build_formal
from blockcert.store.formal_json import formal_json_text, parse_formal, read_formal
from blockcert.verifier.formal import formal_problems

from ._formal_fixtures import FIXTURES, UNSTATED, materialize
from ._lean_text import parse_lean_run

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_JSON = FIXTURES / "example_run.json"
VIOLATIONS = FIXTURES / "violations"
UPDATE = os.environ.get("BLOCKCERT_UPDATE_GOLDEN") == "1"  # rewrite committed expected files, then review the diff


def example() -> FormalRun:
    return read_formal(EXAMPLE_JSON)


def with_prompts(r: FormalRun) -> FormalRun:
    """The Example with a per-prompt part: prompt 0 has the run's own constants (bound 0.031029296875, the run's),
    prompt 1 smaller ε and a larger L (bound 2 · 1/100 + 1/1000 = 0.021); one claim, the run's 1/32."""
    p0 = FormalPrompt(tuple(PromptBlock(b.epsilon, b.lipschitz) for b in r.blocks), Fraction(1, 100))
    p1 = FormalPrompt((PromptBlock(Fraction(1, 100), Fraction(1)), PromptBlock(Fraction(1, 1000), Fraction(2))),
                      Fraction(1, 50))
    return replace(r, per_prompt=PerPrompt(Fraction(1, 32), (p0, p1)))


def with_prompt(r: FormalRun, k: int, i: int | None = None, **kw) -> FormalRun:
    """Prompt k changed: its block i (`epsilon`/`lipschitz`), or the prompt itself (`blocks`/`measured_deviation`)."""
    prompts = list(r.per_prompt.prompts)
    if i is None:
        prompts[k] = replace(prompts[k], **kw)
    else:
        blocks = list(prompts[k].blocks)
        blocks[i] = replace(blocks[i], **kw)
        prompts[k] = replace(prompts[k], blocks=tuple(blocks))
    return replace(r, per_prompt=replace(r.per_prompt, prompts=tuple(prompts)))


def with_block(r: FormalRun, i: int, **kw) -> FormalRun:
    blocks = list(r.blocks)
    blocks[i] = replace(blocks[i], **kw)
    return replace(r, blocks=tuple(blocks))


# ---- the Example run: the Lean author's numbers and hand-computed bound -----------------------------


def test_example_json_has_the_numbers_of_example_lean():
    lean = parse_lean_run((REPO / "BlockCert" / "Runs" / "Example.lean").read_text(encoding="utf-8"), "Example")
    assert replace(example(), name="Example") == lean


def test_example_bound_is_the_hand_computed_one():
    r = example()
    assert global_bound(r.blocks) == Fraction(254192, 8192000)  # BlockCert/Runs/Example.lean's comment
    assert check(r) and has_bound_theorem(r) and run_problems(r) == []


def test_cli_check_on_the_example(cli):
    res = cli("check", EXAMPLE_JSON)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert "global bound sum_i eps_i * prod_(j>i) L_j = 15887/512000 (≈ 3.10292e-2)" in lines
    assert lines[-1] == "verdict: PASS"
    assert lines[2] == (
        "  [ok  ] block 0: eps = 123/4096 (≈ 3.00292e-2), L = 3/2 (≈ 1.50000e0), act = 90/90, "
        "loss = 9.50000e-1/1.00000e0, coverage meets policy = true, certified = true"
    )


def test_cli_check_reads_a_run_directory(cli, tmp_path):
    (tmp_path / "formal_run.json").write_text(EXAMPLE_JSON.read_text(encoding="utf-8"), encoding="utf-8")
    assert cli("check", tmp_path).code == 0


# ---- each violation is rejected --------------------------------------------------------------------

VIOLATION_CASES = {
    "negative_epsilon": (lambda r: with_block(r, 0, epsilon=Fraction(-1, 1000)), ["block 0: epsilon is negative"]),
    "negative_lipschitz": (
        lambda r: with_block(r, 1, lipschitz=Fraction(-1, 2)),
        ["block 1: the Lipschitz constant is negative or has a zero denominator"],
    ),
    "flipped_certified": (
        lambda r: with_block(r, 1, certified=False),
        ["block 1: certified = false, but the coverages against the policy give true"],
    ),
    "certified_below_policy": (
        lambda r: with_block(r, 1, act_covered=84),  # 84/90 < 0.94: the flag `true` is now wrong
        ["block 1: certified = true, but the coverages against the policy give false"],
    ),
    "claimed_below_bound": (
        lambda r: replace(r, claimed_bound=Fraction(254192, 8192000) - Fraction(1, 10**12)),
        ["claimed_bound is below the computed global bound"],
    ),
    "measured_above_claimed": (
        lambda r: replace(r, measured_deviation=Fraction(1, 32) + Fraction(1, 10**10)),
        ["measured_deviation exceeds claimed_bound"],
    ),
    "missing_claim": (
        lambda r: replace(r, claimed_bound=None),
        ["claimed_bound is missing although every block has a Lipschitz constant",
         "measured_deviation is given but claimed_bound is missing"],
    ),
    # One per hypothesis of the per-prompt part (Checker.lean `promptOk`, `checkPrompts`).
    "prompt_too_few_values": (
        lambda r: with_prompt(with_prompts(r), 1, blocks=with_prompts(r).per_prompt.prompts[1].blocks[:1]),
        ["prompt 1: 1 block values for the run's 2 blocks"],
    ),
    "prompt_negative_epsilon": (
        lambda r: with_prompt(with_prompts(r), 0, 1, epsilon=Fraction(-1, 1000)),
        ["prompt 0: block 1: epsilon is negative"],
    ),
    "prompt_negative_lipschitz": (
        lambda r: with_prompt(with_prompts(r), 1, 0, lipschitz=Fraction(-1, 2)),
        ["prompt 1: block 0: the Lipschitz constant is negative or has a zero denominator"],
    ),
    "prompt_claim_below_bound": (  # prompt 0's bound is 0.031029296875; prompt 1's 0.021 is still below the claim
        lambda r: replace(with_prompts(r),
                          per_prompt=replace(with_prompts(r).per_prompt, claimed_bound=Fraction(31, 1000))),
        ["prompt 0: claimed_bound is below the computed global bound"],
    ),
    "prompt_measured_above_claim": (
        lambda r: with_prompt(with_prompts(r), 1, measured_deviation=Fraction(1, 32) + Fraction(1, 10**9)),
        ["prompt 1: measured_deviation exceeds claimed_bound"],
    ),
}


@pytest.mark.parametrize("name", sorted(VIOLATION_CASES))
def test_mirror_rejects_each_violation(name):
    mutate, expected = VIOLATION_CASES[name]
    r = mutate(example())
    assert not check(r)
    assert run_problems(r) == expected


@pytest.mark.parametrize("name", sorted(VIOLATION_CASES))
def test_committed_violation_files(name, cli):
    """tests/fixtures/formal/violations/*.json: the same violations as files (CI's Lean job runs them too)."""
    mutate, expected = VIOLATION_CASES[name]
    path = VIOLATIONS / f"{name}.json"
    text = formal_json_text(replace(mutate(example()), name=f"violation: {name}"))
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text
    res = cli("check", path)
    assert res.code == 1
    assert res.out.splitlines()[-len(expected) - 1:] == ["verdict: FAIL"] + [f"  - {m}" for m in expected]


def test_the_per_prompt_example_passes_and_its_bounds_are_per_prompt():
    r = with_prompts(example())
    assert check(r) and run_problems(r) == []
    bounds = [global_bound(prompt_blocks(r.blocks, p)) for p in r.per_prompt.prompts]
    assert bounds == [Fraction(254192, 8192000), Fraction(21, 1000)]  # each prompt's own recursion
    # the claim only has to cover the max over prompts: exactly at it is enough, one below is not
    at = replace(r, per_prompt=replace(r.per_prompt, claimed_bound=max(bounds)))
    below = replace(at, per_prompt=replace(at.per_prompt, claimed_bound=max(bounds) - Fraction(1, 10**15)))
    assert check(at) and not check(below)
    # an empty prompt list claims nothing about any prompt: nothing to fail
    assert check(replace(r, per_prompt=PerPrompt(Fraction(0), ())))


def test_prompt_blocks_carry_the_run_indices_and_no_coverage():
    r = with_prompts(example())
    pb = prompt_blocks(r.blocks, r.per_prompt.prompts[1])
    assert [(b.index, b.epsilon, b.lipschitz) for b in pb] == [(0, Fraction(1, 100), 1), (1, Fraction(1, 1000), 2)]
    assert all((b.n_tokens, b.act_covered, b.certified) == (0, 0, False) for b in pb)
    # coverage is checked once, on the run: a coverage violation is reported once, not once per prompt
    bad = with_block(r, 1, act_covered=84)
    assert run_problems(bad) == ["block 1: certified = true, but the coverages against the policy give false"]


def test_boundaries_are_inclusive():
    r = example()
    g = global_bound(r.blocks)
    assert check(replace(r, claimed_bound=g, measured_deviation=g))  # claimed = bound, measured = claimed
    # act_covered / n_tokens exactly α_act
    at = with_block(replace(r, policy=replace(r.policy, alpha_act=Fraction(47, 50))), 1, act_covered=47, n_tokens=50)
    assert coverage_ok(at.policy, at.blocks[1]) and check(at)
    below = with_block(at, 1, act_covered=46)
    assert not coverage_ok(below.policy, below.blocks[1]) and not check(below)


def test_no_tokens_is_never_coverage():
    r = with_block(example(), 1, act_covered=0, n_tokens=0, certified=False)
    assert check(r)
    assert not check(with_block(r, 1, certified=True))


def test_without_lipschitz_constants_there_is_no_bound_but_the_rest_is_checked():
    r = with_block(example(), 1, lipschitz=None)
    assert global_bound(r.blocks) is None and not has_bound_theorem(r)
    assert check(r)  # the claim and the measured deviation are still compared
    assert not check(replace(r, measured_deviation=Fraction(1, 16)))
    assert not check(with_block(r, 0, epsilon=Fraction(-1)))


def test_global_bound_is_exact_and_agrees_with_exact_py():
    rng = random.Random(4)
    for _ in range(200):
        n = rng.randrange(0, 12)
        eps = [Fraction(rng.random()) * Fraction(1, 10 ** rng.randrange(6)) for _ in range(n)]
        lips = [Fraction(rng.uniform(0, 3)) for _ in range(n)]
        blocks = tuple(FormalBlock(i, e, lip, 1, 1, Fraction(1), Fraction(1), True)
                       for i, (e, lip) in enumerate(zip(eps, lips, strict=True)))
        closed = sum((e * _prod(lips[i + 1:]) for i, e in enumerate(eps)), Fraction(0))
        assert global_bound(blocks) == exact_global_bound(eps, lips) == closed


def _prod(xs):
    out = Fraction(1)
    for x in xs:
        out *= x
    return out


# ---- exactness: floats enter as their exact values, coverages are never rounded ----------------------


def test_measured_floats_enter_exactly_and_policies_as_their_decimals(tmp_path):
    built = build_formal(materialize("carried", tmp_path))
    assert built.run.policy.alpha_act == Fraction(47, 50)  # the decimal the policy was given as
    b = built.run.blocks[1]
    assert (b.act_covered, b.n_tokens) == (70, 74)  # the coverage is the fraction k/n itself
    assert b.epsilon == Fraction(0.0031415926535) != Fraction("0.0031415926535")  # the double's exact value
    assert b.loss_total == Fraction(380.0000001)


def test_coverage_at_the_threshold_agrees_with_the_float_verdict(tmp_path):
    """18 of 20 tokens against α_act = 0.9: certified as floats (0.9 >= 0.9) and exactly (9/10 >= 9/10); against
    the double 0.9000000000000000222… it would not be."""
    built = build_formal(materialize("bound_only", tmp_path))
    b = built.run.blocks[3]
    assert (b.act_covered, b.n_tokens, b.certified) == (18, 20, True)
    assert coverage_ok(built.run.policy, b) and check(built.run)
    assert not coverage_ok(replace(built.run.policy, alpha_act=Fraction(0.9)), b)


def test_coverage_is_never_rounded_up():
    """k/n just below α rounds to α as a float (so a float verdict certifies it); the exact check does not."""
    k, n = 5 * 10**16 - 1, 10**17
    assert k / n >= 0.5  # float division rounds k/n up to 0.5
    r = replace(example(), policy=replace(example().policy, alpha_act=Fraction(1, 2)))
    r = with_block(r, 1, act_covered=k, n_tokens=n, certified=True)
    assert not coverage_ok(r.policy, r.blocks[1])
    assert run_problems(r) == ["block 1: certified = true, but the coverages against the policy give false"]



def test_the_certificate_verdict_and_the_checker_agree_where_float_division_rounds_up():
    """6.3 / 7.0 rounds to 0.9 exactly, but the double 6.3 is below 9/10 · 7: neither the certificate's
    verdict nor the checker may certify the loss coverage; one exact comparison serves both."""
    from blockcert.core.exact import meets
    from blockcert.core.metrics import BlockMetrics, Policy, verdict

    lc, lt = 6.3, 7.0
    assert lc / lt >= 0.9 and not meets(lc, lt, 0.9)
    m = BlockMetrics(n_tokens=10, nonfinite_tokens=0, epsilon=0.1, mae=0.05, max_relative_error=0.01,
                     max_output_norm=1.0, act_covered=10, cov_act=1.0, path_matched=10, cov_path=1.0,
                     n_loss_tokens=10, loss_covered_weight=lc, loss_total_weight=lt, cov_loss=lc / lt)
    ok, reasons = verdict(m, Policy(alpha_act=0.9, alpha_loss=0.9))
    assert not ok and [r for r in reasons if r.startswith("cov_loss")]
    r = replace(example(), policy=replace(example().policy, alpha_loss=Fraction(9, 10)))
    r = with_block(r, 1, loss_covered=Fraction(lc), loss_total=Fraction(lt), certified=False)
    assert not coverage_ok(r.policy, r.blocks[1]) and run_problems(r) == []

# ---- formal_run.json ---------------------------------------------------------------------------------


def test_json_round_trip_is_exact(tmp_path):
    run = build_formal(materialize("carried", tmp_path)).run
    text = formal_json_text(run, {"notes": ["x"]})
    assert re.search(r"\d[eE][-+]?\d", text) is None  # decimals without exponent
    assert parse_formal(text) == run


def test_json_round_trip_of_the_per_prompt_part():
    r = with_prompts(example())
    text = formal_json_text(r)
    assert '"format": "blockcert.formal/2"' in text and parse_formal(text) == r
    assert parse_formal(formal_json_text(replace(r, per_prompt=None))).per_prompt is None  # written as null
    data = json.loads(text)
    data.pop("per_prompt")
    assert parse_formal(json.dumps(data)).per_prompt is None  # missing reads as null


def test_format_1_is_still_read_without_a_per_prompt_part():
    """formal_run.json files written before /2 (the committed smollm2 runs') still check; a `per_prompt` key in
    a /1 file is outside /1's contract and ignored, as both readers ignore every such key."""
    data = json.loads(formal_json_text(with_prompts(example())))
    data["format"] = "blockcert.formal/1"
    data["per_prompt"]["claimed_bound"] = "not even a number"
    r = parse_formal(json.dumps(data))
    assert r.per_prompt is None and r == example().__class__(**{**example().__dict__, "name": r.name})


def test_json_decimals_are_read_exactly():
    text = EXAMPLE_JSON.read_text(encoding="utf-8").replace('"epsilon": 0.001', '"epsilon": 1.5e-3')
    assert parse_formal(text).blocks[1].epsilon == Fraction(3, 2000)
    assert parse_formal(text.replace('"n_tokens": 90', '"n_tokens": 90.0')).blocks[0].n_tokens == 90
    tiny = EXAMPLE_JSON.read_text(encoding="utf-8").replace("0.001", "0.000001234000000000000001")
    assert parse_formal(tiny).blocks[1].epsilon == Fraction(1234000000000000001, 10**24)


def _n(text: str) -> str:
    """A JSON number written as `text` (`1e1100`: no float can carry it); `_edit` splices it in."""
    return f"@@{text}@@"


def _edit(path: Path, f) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["format"] = "blockcert.formal/2"  # the per-prompt cases need /2 (a /1 file's per_prompt is ignored)
    f(data)
    return re.sub(r'"@@([^@"]+)@@"', r"\1", json.dumps(data))


BAD_INPUTS = {
    "no format": (lambda d: d.pop("format"), 'format: missing (expected "blockcert.formal/2")'),
    "other format": (lambda d: d.update(format="blockcert.formal/3"),
                     'format: unsupported "blockcert.formal/3" '
                     '(expected "blockcert.formal/2" or "blockcert.formal/1")'),
    "half a token": (lambda d: d["blocks"][0].update(n_tokens=90.5), "blocks[0].n_tokens: expected a whole number"),
    "negative count": (lambda d: d["blocks"][1].update(act_covered=-1),
                       "blocks[1].act_covered: expected a natural number"),
    "string epsilon": (lambda d: d["blocks"][0].update(epsilon="0.1"), "blocks[0].epsilon: expected a number"),
    "missing epsilon": (lambda d: d["blocks"][0].pop("epsilon"), "blocks[0].epsilon: expected a number"),
    "bool as number": (lambda d: d["blocks"][0].update(loss_total=True), "blocks[0].loss_total: expected a number"),
    "certified as text": (lambda d: d["blocks"][0].update(certified="yes"),
                          "blocks[0].certified: expected true or false"),
    "blocks not a list": (lambda d: d.update(blocks={}), "blocks: expected an array"),
    "policy missing": (lambda d: d.pop("policy"), "policy: expected an object"),
    "claim as text": (lambda d: d.update(claimed_bound="1"), "claimed_bound: expected a number or null"),
    "huge number": (lambda d: d["blocks"][0].update(epsilon=_n("1e1100")),
                    "blocks[0].epsilon: number too large (limit 1100 digits)"),
    "tiny number": (lambda d: d["blocks"][1].update(lipschitz=_n("1e-1101")),
                    "blocks[1].lipschitz: number too large (limit 1100 digits)"),
    "huge count": (lambda d: d["blocks"][1].update(n_tokens=_n("1e1100")),
                   "blocks[1].n_tokens: number too large (limit 1100 digits)"),
    "too many blocks": (lambda d: d.update(blocks=[d["blocks"][0]] * 4097), "blocks: more than 4096 blocks"),
    "per_prompt not an object": (lambda d: d.update(per_prompt=[]), "per_prompt: expected an object"),
    "per_prompt claim missing": (lambda d: d.update(per_prompt={"prompts": []}),
                                 "per_prompt.claimed_bound: expected a number"),
    "prompts not a list": (lambda d: d.update(per_prompt={"claimed_bound": 1, "prompts": {}}),
                           "per_prompt.prompts: expected an array"),
    "too many prompts": (lambda d: d.update(per_prompt={"claimed_bound": 1, "prompts": [{"blocks": []}] * 4097}),
                         "per_prompt.prompts: more than 4096 prompts"),
    "prompt not an object": (lambda d: d.update(per_prompt={"claimed_bound": 1, "prompts": [1]}),
                             "per_prompt.prompts[0]: expected an object"),
    "prompt lipschitz null": (
        lambda d: d.update(per_prompt={"claimed_bound": 1, "prompts": [
            {"blocks": [{"epsilon": 0, "lipschitz": 1}, {"epsilon": 0, "lipschitz": None}]}]}),
        "per_prompt.prompts[0].blocks[1].lipschitz: expected a number"),
    "prompt measured as text": (
        lambda d: d.update(per_prompt={"claimed_bound": 1, "prompts": [{"blocks": [], "measured_deviation": "0"}]}),
        "per_prompt.prompts[0].measured_deviation: expected a number or null"),
    "prompt huge epsilon": (
        lambda d: d.update(per_prompt={"claimed_bound": 1, "prompts": [
            {"blocks": [{"epsilon": _n("1e-1101"), "lipschitz": 1}]}]}),
        "per_prompt.prompts[0].blocks[0].epsilon: number too large (limit 1100 digits)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_ill_formed_input_exits_2_with_one_line(case, cli, tmp_path):
    """The line is the Lean checker's (`blockcert_check: PATH: ill-formed formal run: …`), with this CLI's prefix."""
    mutate, message = BAD_INPUTS[case]
    path = tmp_path / "bad.json"
    path.write_text(_edit(EXAMPLE_JSON, mutate), encoding="utf-8")
    res = cli("check", path)
    assert (res.code, res.out) == (2, "")
    assert res.err.splitlines() == [f"error: {path}: ill-formed formal run: {message}"]


@pytest.mark.parametrize("text", ["[]", "{", '{"format": NaN}', ""])
def test_unreadable_json_exits_2(text, cli, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    res = cli("check", path)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and res.err.startswith("error: ")


def test_missing_file_exits_2(cli, tmp_path):
    res = cli("check", tmp_path)  # a directory without formal_run.json
    assert res.code == 2 and "cannot read" in res.err


def test_non_decimal_fractions_are_refused_not_rounded():
    with pytest.raises(ValueError, match="no finite decimal expansion"):
        formal_json_text(replace(example(), claimed_bound=Fraction(1, 3)))


# ---- the report's number formatting (Report.lean `Q.toSci`) ---------------------------------------------


def _sci_reference(q: Fraction) -> str:
    """Six significant digits truncated toward zero, by decimal arithmetic (independent of q_to_sci)."""
    if q == 0:
        return "0"
    ctx = Context(prec=80, rounding=ROUND_DOWN)
    d = ctx.divide(Decimal(abs(q.numerator)), Decimal(q.denominator))
    e = d.adjusted()
    m = ctx.multiply(d, Decimal(10) ** -e).quantize(Decimal("1.00000"), rounding=ROUND_DOWN)
    return f"{'-' if q < 0 else ''}{m}e{e}"


def test_sci_notation_matches_a_decimal_reference():
    rng = random.Random(7)
    cases = [Fraction(1), Fraction(10), Fraction(999999, 1000000), Fraction(1, 3), Fraction(-2, 3),
             Fraction(254192, 8192000), Fraction(10**40 + 1, 7), Fraction(1, 10**30)]
    cases += [Fraction(rng.randrange(-10**12, 10**12), rng.randrange(1, 10**15)) for _ in range(500)]
    for q in cases:
        assert q_to_sci(q) == _sci_reference(q), q


# ---- real runs ---------------------------------------------------------------------------------------


def test_real_toy_run_passes_the_mirror(toy_run):
    built = build_formal(toy_run)
    assert check(built.run), run_problems(built.run)
    assert [b.index for b in built.run.blocks] == [0, 1, 2]
    assert formal_problems(toy_run) == []
    assert report_lines(built.run)[-1] == "verdict: PASS"


ARTIFACT_RUNS = sorted(p.parent for p in (REPO / "artifacts").glob("**/summary.json"))


@pytest.mark.skipif(not ARTIFACT_RUNS, reason="no committed run under artifacts/ yet")
@pytest.mark.parametrize("run_dir", ARTIFACT_RUNS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_committed_runs_pass_the_mirror(run_dir):
    assert formal_problems(run_dir) == []
    if (run_dir / "formal_run.json").is_file():
        assert check(read_formal(run_dir))


def test_a_run_without_any_finite_block_states_nothing(tmp_path, cli):
    from blockcert.store.formal_inputs import NothingToState

    run_dir = materialize("all_nonfinite", tmp_path, UNSTATED)
    with pytest.raises(NothingToState):
        build_formal(run_dir)
    assert formal_problems(run_dir) == []  # an honest record: verify has nothing formal to object to
    res = cli("lean", run_dir)
    assert res.code == 1 and "nothing to state formally" in res.err and len(res.err.strip().splitlines()) == 1


# ---- `blockcert verify` fails on violated hypotheses --------------------------------------------------


def test_verify_reports_a_flipped_flag_as_a_formal_problem(run_copy):
    from blockcert.verifier.run import verify_run

    from .test_verify import reseal

    reseal(run_copy, 1, lambda d: d.update(certified=not d["certified"]))
    lines = verify_run(run_copy).lines()
    assert any(line.startswith("formal check: block 1: certified = ") for line in lines), lines


def test_verify_catches_an_edited_formal_run_json(run_copy, tmp_path):
    from blockcert.verifier.run import verify_run
    from blockcert.workflows.lean import instantiate

    from .test_bridge import lean_tree

    instantiate(run_copy, lean_tree(tmp_path / "lean"))
    assert verify_run(run_copy).ok
    path = run_copy / "formal_run.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"certified": true', '"certified": false', 1))
    assert "formal_run.json differs from the run's certificates" in "\n".join(verify_run(run_copy).lines())


# ---- bound.json and the full-model certificate ------------------------------------------------------------


def _reseal_bound(run_dir: Path, **update) -> None:
    """What `blockcert bound` would have written with other numbers (digest recomputed)."""
    from blockcert.records.bound import BoundArtifact
    from blockcert.store.records_io import load_model_file, write_model_file

    art = load_model_file(run_dir / "bound.json", BoundArtifact, "bound file")
    write_model_file(run_dir / "bound.json", art.model_copy(update=update).sealed())


def _reseal_full_model(run_dir: Path, measured: float) -> None:
    from blockcert.records.fullmodel import FullModelCertificate
    from blockcert.store.records_io import load_model_file, write_model_file

    cert = load_model_file(run_dir / "full_model_certificate.json", FullModelCertificate, "full-model certificate")
    metrics = cert.metrics.model_copy(update={"measured_deviation": measured})
    write_model_file(run_dir / "full_model_certificate.json", cert.model_copy(update={"metrics": metrics}).sealed())


def _bound_art(run_dir: Path):
    from blockcert.records.bound import BoundArtifact
    from blockcert.store.records_io import load_model_file

    return load_model_file(run_dir / "bound.json", BoundArtifact, "bound file")


def test_bound_json_gives_every_layer_and_the_claim(tmp_path):
    run_dir = materialize("bounded", tmp_path)
    built = build_formal(run_dir)
    r, art = built.run, _bound_art(run_dir)
    assert [b.index for b in r.blocks] == [0, 1, 2, 3]
    native = r.blocks[2]  # no surrogate for layer 2: replayed natively, with its composed ε (the traces' rounding)
    assert (native.epsilon, native.n_tokens, native.certified, native.lipschitz) == (
        Fraction(2**-26), 0, False, Fraction(9, 4))
    assert r.blocks[1].lipschitz == Fraction(1.6000000000000001)  # the local kind's float, exactly
    assert r.claimed_bound == Fraction(art.claimed_bound["local"]) >= global_bound(r.blocks)
    assert r.measured_deviation == Fraction(0.0079)  # the full-model certificate's (last layer's worst token)
    assert check(r) and has_bound_theorem(r)
    assert built.info["lipschitz_kind"] == "local" and built.info["native_layers"] == [2]


def test_the_formal_run_composes_bound_json_epsilon_composed(tmp_path):
    """Issue 18's soundness: with bound.json the ε of every block is `epsilon_composed` (certified error plus the
    replay's forward error), which here exceeds every certificate's ε; the run still passes, its claim is the one
    bound.json made from the composed ε, and formal_run.json says which ε it states."""
    from blockcert.store.formal_bounds import EPS_COMPOSED

    run_dir = materialize("bounded", tmp_path)
    built = build_formal(run_dir)
    art = _bound_art(run_dir)
    composed = [Fraction(b.epsilon_composed) for b in art.blocks]
    certified = [Fraction(b.epsilon) for b in art.blocks]
    assert [b.epsilon for b in built.run.blocks] == composed
    assert all(c > e for c, e in zip(composed, certified, strict=True))  # the composed ε exceeds the certified one
    assert check(built.run), run_problems(built.run)
    with_certified = [replace(b, epsilon=e) for b, e in zip(built.run.blocks, certified, strict=True)]
    assert global_bound(with_certified) < global_bound(built.run.blocks) <= built.run.claimed_bound
    assert built.info["epsilon_source"] == EPS_COMPOSED
    text = (run_dir / "formal_run.json")
    from blockcert.workflows.lean import instantiate

    from .test_bridge import lean_tree

    instantiate(run_dir, lean_tree(tmp_path / "lean"))
    assert json.loads(text.read_text(encoding="utf-8"))["epsilon_source"] == EPS_COMPOSED
    assert formal_problems(run_dir) == []


def test_a_claim_made_from_the_certified_epsilon_fails(tmp_path):
    """A bound.json whose claim composes the certificates' ε (what the formal run stated before bound.json /2)
    is below the recursion over the composed ε: the formal check refuses it."""
    from blockcert.core.exact import decimal_str, prefix_bounds, round_up_sig

    run_dir = materialize("bounded", tmp_path)
    art = _bound_art(run_dir)
    lips = [Fraction(next(c.value for c in b.constants if c.kind == "local")) for b in art.blocks]
    low = round_up_sig(prefix_bounds([Fraction(b.epsilon) for b in art.blocks], lips)[-1], 6)
    assert low < global_bound(build_formal(run_dir).run.blocks)
    _reseal_bound(run_dir, claimed_bound={**art.claimed_bound, "local": decimal_str(low)})
    assert "formal check: claimed_bound is below the computed global bound" in formal_problems(run_dir)


def test_without_bound_json_the_certificate_epsilon_is_stated(tmp_path):
    from blockcert.store.formal_bounds import EPS_CERTIFICATE

    built = build_formal(materialize("carried", tmp_path))
    assert built.info["epsilon_source"] == EPS_CERTIFICATE and built.run.per_prompt is None
    assert built.run.blocks[1].epsilon == Fraction(0.0031415926535)


def test_the_per_prompt_part_is_bound_json_per_prompt_kind(tmp_path, cli):
    run_dir = materialize("bounded", tmp_path)
    built = build_formal(run_dir)
    art = _bound_art(run_dir)
    pp = built.run.per_prompt
    assert pp is not None and pp.claimed_bound == Fraction(art.claimed_bound["per_prompt"])
    assert len(pp.prompts) == 2 and built.info["per_prompt_kind"] == "per_prompt"
    for k, p in enumerate(pp.prompts):
        assert [q.epsilon for q in p.blocks] == [Fraction(b.epsilon_composed_per_prompt[k]) for b in art.blocks]
        consts = [next(c for c in b.constants if c.kind == "per_prompt") for b in art.blocks]
        assert [q.lipschitz for q in p.blocks] == [Fraction(c.per_prompt[k]) for c in consts]
        assert p.measured_deviation == Fraction(art.blocks[-1].output_deviation_per_prompt[k])
    bounds = [global_bound(prompt_blocks(built.run.blocks, p)) for p in pp.prompts]
    assert max(bounds) <= pp.claimed_bound < max(bounds) * (1 + Fraction(1, 10**5))  # the max, rounded up
    assert check(built.run)
    from blockcert.store.formal_json import write_formal

    write_formal(tmp_path / "f.json", built.run)
    res = cli("check", tmp_path / "f.json")
    assert res.code == 0, res.out
    lines = res.out.splitlines()
    assert f"per-prompt claimed bound: {q_pretty(pp.claimed_bound)}" in lines
    assert [ln for ln in lines if ln.startswith("  [ok  ] prompt ")] == [
        f"  [ok  ] prompt {k}: bound = {q_pretty(b)}, measured = {q_pretty(p.measured_deviation)}"
        for k, (b, p) in enumerate(zip(bounds, pp.prompts, strict=True))]


def test_measured_deviation_falls_back_to_bound_json(tmp_path):
    built = build_formal(materialize("bound_only", tmp_path))
    assert built.run.measured_deviation == Fraction(1.2e-05)
    assert any("bound.json's (its own stitched replay" in n for n in built.notes)


def test_claim_below_the_computed_bound_fails_verification(tmp_path):
    run_dir = materialize("bounded", tmp_path)
    exact = global_bound(build_formal(run_dir).run.blocks)
    low = Fraction(int(exact * 10**6), 10**6)  # rounded down: below the exact bound
    _reseal_bound(run_dir, claimed_bound={"global": "1", "local": str(float(low)), "empirical": "0",
                                          "trajectory": "0"})
    assert formal_problems(run_dir) == ["formal check: claimed_bound is below the computed global bound"]


def test_measured_deviation_above_the_claim_fails_verification(tmp_path):
    run_dir = materialize("bounded", tmp_path)
    _reseal_full_model(run_dir, 0.0118)
    assert formal_problems(run_dir) == ["formal check: measured_deviation exceeds claimed_bound"]


def test_negative_epsilon_fails_verification(tmp_path):
    from .test_verify import reseal

    run_dir = materialize("carried", tmp_path)
    reseal(run_dir, 1, lambda d: d["metrics"].update(epsilon=-0.001))
    assert formal_problems(run_dir) == ["formal check: block 1: epsilon is negative"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("unsealed", "bound.json does not match its digest (edited?)"),
        ("unsound kind", "formal_kind 'empirical' is not a sound kind"),
        ("stale", "bound.json was made for other block certificates (stale)"),
    ],
)
def test_unusable_bound_json_is_a_problem_not_an_omission(edit, message, tmp_path):
    from .test_verify import reseal

    run_dir = materialize("bounded", tmp_path)
    if edit == "unsealed":
        p = run_dir / "bound.json"
        p.write_text(p.read_text(encoding="utf-8").replace('"formal_kind": "local"', '"formal_kind": "global"'))
    elif edit == "unsound kind":
        _reseal_bound(run_dir, formal_kind="empirical")
    else:
        reseal(run_dir, 0, lambda d: d["metrics"].update(mae=1e-5))  # a new certificate for block 0
    problems = formal_problems(run_dir)
    assert len(problems) == 1 and problems[0].startswith("formal run: ") and message in problems[0], problems


def test_full_model_certificate_of_other_blocks_is_not_used(tmp_path):
    run_dir = materialize("bounded", tmp_path)
    from blockcert.records.fullmodel import FullModelCertificate
    from blockcert.store.records_io import load_model_file, write_model_file

    path = run_dir / "full_model_certificate.json"
    cert = load_model_file(path, FullModelCertificate, "full-model certificate")
    write_model_file(path, cert.model_copy(update={"stitched_blocks": (0, 1),
                                                    "block_certificates": cert.block_certificates[:2]}).sealed())
    built = build_formal(run_dir)
    assert built.run.measured_deviation == Fraction(0.0041)  # bound.json's own measurement instead
    assert any("stitched blocks [0, 1], not the run's [0, 1, 3]" in n for n in built.notes)


def test_measured_deviation_without_a_claim_is_left_out(tmp_path):
    run_dir = materialize("bounded", tmp_path)
    (run_dir / "bound.json").unlink()
    built = build_formal(run_dir)
    assert built.run.measured_deviation is None and built.run.claimed_bound is None and check(built.run)
    assert any("claims no bound to compare it with" in n for n in built.notes)
