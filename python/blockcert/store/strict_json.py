"""The one hardened JSON reader: every file a run holds is hostile input until this module has parsed it.

`json.loads` alone accepts duplicate keys (the last one wins, so `"certified": true` placed before the real
`false` is invisible to a person reading the file), the non-standard constants `NaN`/`Infinity`, numbers
that overflow a float (`1e309` becomes inf) and nesting deep enough to exhaust the stack. Each is refused
here with one line naming the file and what to do, before any digest over the parsed value is trusted.

Limits (a real run stays far below each; see docs in the README's verify section):
  MAX_JSON_BYTES   file size           64 MiB  (the largest committed JSON file is < 2 MiB)
  MAX_DEPTH        nesting of [ and {  64      (records nest at most 6 deep)
  MAX_NUMBER_CHARS one number's text   1,200   (a float64's exact decimal has at most 1,077 characters)
"""

from __future__ import annotations

import json
import math
import os
import stat
from decimal import Decimal
from pathlib import Path
from typing import Any

from blockcert.errors import BlockCertError

MAX_JSON_BYTES = 64 << 20
MAX_DEPTH = 64
MAX_NUMBER_CHARS = 1_200


class StrictJsonError(BlockCertError):
    """The bytes are not strict JSON (the message says where and why)."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise StrictJsonError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _constant(name: str):
    raise StrictJsonError(f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise StrictJsonError(f"a number of {len(text)} characters (limit {MAX_NUMBER_CHARS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise StrictJsonError(f"a number of {len(text)} characters (limit {MAX_NUMBER_CHARS})")
    x = float(text)
    if not math.isfinite(x):
        raise StrictJsonError(f"number {text[:40]} overflows a float64")
    return x


def _decimal(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_CHARS:
        raise StrictJsonError(f"a number of {len(text)} characters (limit {MAX_NUMBER_CHARS})")
    return Decimal(text)


def _depth_ok(text: str) -> None:
    """Reject over-deep nesting before the recursive parser sees it (it would raise RecursionError).

    Brackets inside strings do not count: a simple scan that skips string bodies (escapes included)."""
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise StrictJsonError(f"nested deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def parse_strict(data: bytes | str, exact: bool = False) -> Any:
    """Strict JSON from bytes (UTF-8, a leading BOM refused): `exact` reads every number as a Decimal."""
    if isinstance(data, bytes):
        if len(data) > MAX_JSON_BYTES:
            raise StrictJsonError(f"{len(data)} bytes (limit {MAX_JSON_BYTES})")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StrictJsonError(f"not UTF-8 (byte {e.start})") from None
    else:
        text = data
    if text.startswith("\ufeff"):
        raise StrictJsonError("starts with a byte-order mark")
    _depth_ok(text)
    try:
        return json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_constant,
            parse_int=_decimal if exact else _int,
            parse_float=_decimal if exact else _float,
        )
    except StrictJsonError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise StrictJsonError(f"not valid JSON ({str(e).splitlines()[0][:200]})") from None


def read_regular(path: Path, what: str, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of `path`, which must be a regular file (no FIFO, device, directory) of at most `limit` bytes.

    The file is opened without following a final symlink's target type blindly: opened O_NONBLOCK so a FIFO
    cannot hang us, then fstat'ed, and only a regular file is read, never more than `limit` bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BlockCertError(f"{what} not found: {path}") from None
    except OSError as e:
        raise BlockCertError(f"{what} {path} cannot be opened ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BlockCertError(f"{what} {path} is not a regular file (a directory, FIFO or device); replace it")
        if st.st_size > limit:
            raise BlockCertError(f"{what} {path} is {st.st_size} bytes, over the limit of {limit}: "
                                 "not a BlockCert file")
        # Exactly the size fstat reported, in one allocation (a block's IR is hundreds of MB: no chunks to
        # join), and nothing after it: a file that changes size while it is read is refused.
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            data = f.read(st.st_size)
            if 0 < len(data) < st.st_size:  # one read(2) returns at most ~2 GiB: the rest in further reads
                parts = [data]
                while (n := sum(map(len, parts))) < st.st_size and (more := f.read(st.st_size - n)):
                    parts.append(more)
                data = b"".join(parts)
            if len(data) != st.st_size or f.read(1):
                raise BlockCertError(f"{what} {path} changed size while being read; read it again when it is "
                                     "no longer being written")
        return data
    except OSError as e:
        raise BlockCertError(f"{what} {path} cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)


def load_strict(path: Path, what: str, exact: bool = False) -> Any:
    """A JSON file, strictly: one BlockCertError line naming the file on any problem."""
    data = read_regular(path, what)
    try:
        return parse_strict(data, exact=exact)
    except StrictJsonError as e:
        raise BlockCertError(f"{what} {path} is not strict JSON: {e}") from None
