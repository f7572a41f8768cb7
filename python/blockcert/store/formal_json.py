"""`formal_run.json` (format "blockcert.formal/2"): the contract BlockCert/Json.lean parses, read and written exactly.

Format /2 is /1 plus an optional `per_prompt` object (null or missing: none):
`{"claimed_bound": C, "prompts": [{"blocks": [{"epsilon": e, "lipschitz": l}, ...], "measured_deviation": m}]}`,
one entry per prompt with one `{epsilon, lipschitz}` per block of `blocks`, in the same order. Files of
format /1 are still read (both readers), as runs without a per-prompt part; files are written as /2.

Numbers are JSON decimals without exponent, so Lean's parser (which keeps `mantissa / 10^exponent`)
and this module read the very fraction written. Every value a formal run holds is a float's exact value
(a dyadic fraction) or a decimal (a policy threshold, bound.json's claim), so its denominator has no
prime but 2 and 5 and it is written in full (`exact.decimal_str`). Any other fraction is refused, not
rounded: rounding is decided where a number is made (formal_build.py, bound.json), never silently here.

Reading mirrors Json.lean: a missing key reads as null, naturals may be written `90.0` but not `90.5`,
and the error messages name the field as Lean's do. Keys other than the contract's are ignored by both
readers and carry provenance for people.
"""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from blockcert.core.exact import decimal_str
from blockcert.errors import BlockCertError
from blockcert.formal.mirror import (
    FORMAL_FILE,
    FORMAT,
    FORMAT_V1,
    FormalBlock,
    FormalPolicy,
    FormalPrompt,
    FormalRun,
    PerPrompt,
    PromptBlock,
)
from blockcert.store.files import atomic_write_bytes
from blockcert.store.strict_json import read_regular


class FormalInputError(BlockCertError):
    """`formal_run.json` is unreadable or does not follow the contract (the Lean checker's exit code 2)."""


def _num(q: Fraction | None) -> str:
    return "null" if q is None else decimal_str(q)


def _block_text(b: FormalBlock) -> str:
    fields = [
        ("index", str(b.index)), ("epsilon", _num(b.epsilon)), ("lipschitz", _num(b.lipschitz)),
        ("act_covered", str(b.act_covered)), ("n_tokens", str(b.n_tokens)),
        ("loss_covered", _num(b.loss_covered)), ("loss_total", _num(b.loss_total)),
        ("certified", "true" if b.certified else "false"),
    ]
    return "    {\n" + ",\n".join(f'      "{k}": {v}' for k, v in fields) + "\n    }"


def _prompt_text(p: FormalPrompt) -> str:
    blocks = ",\n".join(f'          {{"epsilon": {_num(q.epsilon)}, "lipschitz": {_num(q.lipschitz)}}}'
                        for q in p.blocks)
    return ('      {\n        "blocks": [' + (f"\n{blocks}\n        ]" if p.blocks else "]")
            + f',\n        "measured_deviation": {_num(p.measured_deviation)}\n      }}')


def _per_prompt_text(pp: PerPrompt | None) -> str:
    if pp is None:
        return "null"
    prompts = ",\n".join(_prompt_text(p) for p in pp.prompts)
    return ('{\n' f'    "claimed_bound": {_num(pp.claimed_bound)},\n'
            '    "prompts": [' + (f"\n{prompts}\n    ]" if pp.prompts else "]") + "\n  }")


def formal_json_text(run: FormalRun, info: dict[str, Any] | None = None) -> str:
    """The file's bytes: the contract's keys with exact decimals, then `info` (ignored by both readers)."""
    blocks = ",\n".join(_block_text(b) for b in run.blocks)
    parts = [
        f'  "format": {json.dumps(FORMAT)}',
        f'  "run": {json.dumps(run.name, ensure_ascii=False)}',
        '  "policy": {\n'
        f'    "alpha_act": {decimal_str(run.policy.alpha_act)},\n'
        f'    "alpha_loss": {decimal_str(run.policy.alpha_loss)}\n  }}',
        '  "blocks": [' + (f"\n{blocks}\n  ]" if run.blocks else "]"),
        f'  "claimed_bound": {_num(run.claimed_bound)}',
        f'  "measured_deviation": {_num(run.measured_deviation)}',
        f'  "per_prompt": {_per_prompt_text(run.per_prompt)}',
    ]
    for key, value in sorted((info or {}).items()):
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        parts.append(f"  {json.dumps(key)}: " + text.replace("\n", "\n  "))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_formal(path: Path, run: FormalRun, info: dict[str, Any] | None = None) -> None:
    atomic_write_bytes(path, formal_json_text(run, info).encode("utf-8"))


# ---- reading, as BlockCert/Json.lean does -------------------------------------------------------------


class _Contract(Exception):
    """A field does not follow the contract (message: `<field>: <what was expected>`)."""


def _no_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


# Bounded work (mirrored by Json.lean): a number's mantissa has at most MAX_DIGITS decimal digits and its
# scale (digits after the point) at most MAX_DIGITS; a run holds at most MAX_BLOCKS blocks. A float64's exact
# decimal has at most 767 significant digits and 1074 after the point, so every number a run produces fits;
# `1e100000`, which would make every later product a 100,000-digit integer, is refused at once.
MAX_DIGITS = 1100
MAX_BLOCKS = 4096


def _is_number(v: Any) -> bool:
    return isinstance(v, Decimal)  # every JSON number is read as a Decimal, integers included


def _exact(ctx: str, v: Any) -> Fraction:
    t = v.as_tuple()
    if not isinstance(t.exponent, int):
        raise _Contract(f"{ctx}: expected a number")
    nonzero = any(t.digits)
    mantissa_digits = (len(t.digits) + max(t.exponent, 0)) if nonzero else 1
    if mantissa_digits > MAX_DIGITS or -t.exponent > MAX_DIGITS:
        raise _Contract(f"{ctx}: number too large (limit {MAX_DIGITS} digits)")
    return Fraction(v)


def _q(ctx: str, v: Any) -> Fraction:
    if not _is_number(v):
        raise _Contract(f"{ctx}: expected a number")
    return _exact(ctx, v)


def _opt_q(ctx: str, v: Any) -> Fraction | None:
    if v is None:
        return None
    if not _is_number(v):
        raise _Contract(f"{ctx}: expected a number or null")
    return _exact(ctx, v)


def _nat(ctx: str, v: Any) -> int:
    if not _is_number(v) or v < 0:
        raise _Contract(f"{ctx}: expected a natural number")
    q = _exact(ctx, v)
    if q.denominator != 1:
        raise _Contract(f"{ctx}: expected a whole number")
    return q.numerator


def _bool(ctx: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Contract(f"{ctx}: expected true or false")
    return v


def _obj(ctx: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise _Contract(f"{ctx}: expected an object")
    return v


def _block(ctx: str, v: Any) -> FormalBlock:
    j = _obj(ctx, v)
    return FormalBlock(
        index=_nat(f"{ctx}.index", j.get("index")),
        epsilon=_q(f"{ctx}.epsilon", j.get("epsilon")),
        lipschitz=_opt_q(f"{ctx}.lipschitz", j.get("lipschitz")),
        act_covered=_nat(f"{ctx}.act_covered", j.get("act_covered")),
        n_tokens=_nat(f"{ctx}.n_tokens", j.get("n_tokens")),
        loss_covered=_q(f"{ctx}.loss_covered", j.get("loss_covered")),
        loss_total=_q(f"{ctx}.loss_total", j.get("loss_total")),
        certified=_bool(f"{ctx}.certified", j.get("certified")),
    )


def parse_formal(text: str) -> FormalRun:
    """`parseRun` of Json.lean: decimals read exactly (as Decimal, never float). Errors read like the Lean
    checker's: `not valid JSON: …` or `ill-formed formal run: <field>: …`."""
    try:
        j = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError, ArithmeticError) as e:  # JSONDecodeError is a ValueError
        raise FormalInputError(f"not valid JSON: {e}") from None
    try:
        return _run(j)
    except _Contract as e:
        raise FormalInputError(f"ill-formed formal run: {e}") from None


def _prompt_block(ctx: str, v: Any) -> PromptBlock:
    j = _obj(ctx, v)
    return PromptBlock(epsilon=_q(f"{ctx}.epsilon", j.get("epsilon")),
                       lipschitz=_q(f"{ctx}.lipschitz", j.get("lipschitz")))


def _array(ctx: str, v: Any, what: str) -> list:
    if not isinstance(v, list):
        raise _Contract(f"{ctx}: expected an array")
    if len(v) > MAX_BLOCKS:
        raise _Contract(f"{ctx}: more than {MAX_BLOCKS} {what}")
    return v


def _prompt(ctx: str, v: Any) -> FormalPrompt:
    j = _obj(ctx, v)
    blocks = _array(f"{ctx}.blocks", j.get("blocks"), "blocks")
    return FormalPrompt(
        blocks=tuple(_prompt_block(f"{ctx}.blocks[{i}]", b) for i, b in enumerate(blocks)),
        measured_deviation=_opt_q(f"{ctx}.measured_deviation", j.get("measured_deviation")),
    )


def _per_prompt(v: Any) -> PerPrompt | None:
    if v is None:
        return None
    j = _obj("per_prompt", v)
    claimed = _q("per_prompt.claimed_bound", j.get("claimed_bound"))
    prompts = _array("per_prompt.prompts", j.get("prompts"), "prompts")
    return PerPrompt(claimed, tuple(_prompt(f"per_prompt.prompts[{i}]", p) for i, p in enumerate(prompts)))


def _run(j: Any) -> FormalRun:
    _obj("top level", j)
    fmt = j.get("format")
    if not isinstance(fmt, str):
        raise _Contract(f'format: missing (expected "{FORMAT}")')
    if fmt not in (FORMAT, FORMAT_V1):
        raise _Contract(f'format: unsupported "{fmt}" (expected "{FORMAT}" or "{FORMAT_V1}")')
    pol = _obj("policy", j.get("policy"))
    policy = FormalPolicy(_q("policy.alpha_act", pol.get("alpha_act")), _q("policy.alpha_loss", pol.get("alpha_loss")))
    blocks = _array("blocks", j.get("blocks"), "blocks")
    name = j.get("run")
    # Field order = Json.lean's `parseFormal` (the first ill-formed field is the one both readers name).
    parsed = tuple(_block(f"blocks[{i}]", b) for i, b in enumerate(blocks))
    claimed = _opt_q("claimed_bound", j.get("claimed_bound"))
    measured = _opt_q("measured_deviation", j.get("measured_deviation"))
    return FormalRun(
        name=name if isinstance(name, str) else "(unnamed)",
        policy=policy,
        blocks=parsed,
        claimed_bound=claimed,
        measured_deviation=measured,
        # A /1 file has no per-prompt part: a `per_prompt` key in it is provenance, ignored like any other.
        per_prompt=_per_prompt(j.get("per_prompt")) if fmt == FORMAT else None,
    )


def formal_path(path: Path) -> Path:
    """A run directory means its `formal_run.json`; anything else is the JSON file itself (as the Lean CLI)."""
    return path / FORMAL_FILE if path.is_dir() else path


MAX_FORMAL_BYTES = 16 << 20


def read_formal(path: Path) -> FormalRun:
    """Read `path` (a run directory or the file); a FormalInputError's message is the Lean checker's line."""
    file = formal_path(path)
    try:
        text = read_regular(file, "formal run", MAX_FORMAL_BYTES).decode("utf-8")
    except BlockCertError as e:
        raise FormalInputError(f"cannot read {file}: {e}") from None
    except UnicodeDecodeError as e:
        raise FormalInputError(f"cannot read {file}: {e}") from None
    try:
        return parse_formal(text)
    except FormalInputError as e:
        raise FormalInputError(f"{path}: {e}") from None
