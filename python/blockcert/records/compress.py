"""RUN_DIR/compress.json: what `blockcert compress` tried per block, what it chose, and at what cost."""

from __future__ import annotations

from blockcert.core.schema import Frozen

COMPRESS_FILE = "compress.json"


class BlockChoice(Frozen):
    block_index: int
    chosen: str  # the surrogate kind written (the run's previous one when nothing smaller certified)
    tried: tuple[str, ...]  # the best certified candidate of each search, smallest first
    native_bytes: int
    bytes: int
    byte_ratio: float
    certified: bool
    cov_act: float
    epsilon: float | None
    replays: int  # candidate surrogates replayed on the block's traces
    suffix_recomputations: int  # stitched suffixes recomputed natively (only where cov_act passed)


class CompressReport(Frozen):
    family: str
    target_cov_act: float
    blocks: tuple[BlockChoice, ...]
