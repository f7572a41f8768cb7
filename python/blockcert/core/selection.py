"""Block selections as users write them (`0,5,10`, `3-7`, `all`), parsed strictly.

Only ASCII digits count: `int()` alone would also take full-width digits (`１`) and underscores (`1_0` → 10),
and a reversed range (`3-1`) would silently select nothing.
"""

from __future__ import annotations

import re

from blockcert.errors import BlockCertError

_PART = re.compile(r"([0-9]+)(?:-([0-9]+))?", re.ASCII)
MAX_SPEC_CHARS = 10_000


def parse_blocks(spec: str, num_layers: int) -> list[int]:
    if spec.strip() == "all":
        return list(range(num_layers))
    hint = f"--blocks {spec[:60]!r}: expected indices like 0,5,10 or 3-7 or all"
    if len(spec) > MAX_SPEC_CHARS:
        raise BlockCertError(hint)
    out = set()
    for part in spec.split(","):
        m = _PART.fullmatch(part.strip())
        if m is None:
            raise BlockCertError(hint) from None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise BlockCertError(f"--blocks {spec!r}: range {part.strip()} is reversed; write {hi}-{lo}")
        for i in (lo, hi):
            if not 0 <= i < num_layers:
                raise BlockCertError(
                    f"block index {i} is out of range: the model has {num_layers} blocks (0..{num_layers - 1})"
                )
        out.update(range(lo, hi + 1))
    if not out:
        raise BlockCertError(f"--blocks {spec!r} names no block")
    return sorted(out)
