"""Block selections as users write them (`0,5,10`, `3-7`, `all`), parsed strictly."""

from __future__ import annotations

from blockcert.errors import BlockCertError


def parse_blocks(spec: str, num_layers: int) -> list[int]:
    if spec.strip() == "all":
        return list(range(num_layers))
    out = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                idx = range(lo, hi + 1)
            else:
                idx = [int(part)]
        except ValueError:
            raise BlockCertError(f"--blocks {spec!r}: expected indices like 0,5,10 or 3-7 or all") from None
        for i in idx:
            if not 0 <= i < num_layers:
                raise BlockCertError(
                    f"block index {i} is out of range: the model has {num_layers} blocks (0..{num_layers - 1})"
                )
            out.add(i)
    if not out:
        raise BlockCertError(f"--blocks {spec!r} names no block")
    return sorted(out)
