"""`blockcert compress`: per block, the smallest surrogate of a family that is still certified.

The search is a bisection on the family's one integer knob (rank R, kept heads K, kept fraction F in
steps of 1/128), assuming that a larger knob never certifies worse: a bisection on activation coverage
(⌈log₂ n⌉ + 1 replays on the block's stored traces), then one stitched-suffix recomputation (the loss
coverage) at the knob found, more only where the loss coverage fails there (`_bisect`). `auto` runs
every family and two combinations (low-rank attention with pruned neurons; pruned neurons stored int8)
and keeps the smallest certified surrogate by the bytes of its tensors. A block where nothing smaller
is certified keeps its surrogate.

The chosen surrogate replaces the block's files and certificate in place, verdicts last; every file
derived from the old surrogates (full-model certificate, bound, formal run and the Lean module it names,
the ablation runs of `blockcert ablate`) is removed first, since it no longer describes the run.
`compress.json` records what was tried, at what cost.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from blockcert.arch.loading import LoadedModel, load_model, load_run_model
from blockcert.arch.native import NativeModel
from blockcert.core.digest import sha256_bytes
from blockcert.errors import BlockCertError
from blockcert.formal.mirror import FORMAL_FILE
from blockcert.present.progress import say, track
from blockcert.records.bound import BOUND_FILE
from blockcert.records.compress import COMPRESS_FILE, BlockChoice, CompressReport
from blockcert.records.fullmodel import CERTIFICATE_FILE, EVALUATION_FILE, SEMANTIC_FILE
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.files import json_bytes, read_json
from blockcert.store.run_files import save_files
from blockcert.store.run_reader import block_certificate, load_run_summary, select_blocks
from blockcert.surrogates import ABLATIONS, check_text, derive_named, lowrank, needs_traces, parse_kind
from blockcert.surrogates.linear import ATTENTION, MLP, linear_names
from blockcert.workflows.candidates import Bench, Measured, RunContext
from blockcert.workflows.extract import ExtractOptions, run_extract, summary_of

FAMILIES = ("lowrank", "prune-heads", "prune-neurons", "int8", "auto")
# Files computed from the previous surrogates: removed before any block is rewritten.
STALE = (CERTIFICATE_FILE, EVALUATION_FILE, SEMANTIC_FILE, BOUND_FILE, FORMAL_FILE)
# `blockcert ablate` writes RUN/ablations/: one run per ablation of the run's surrogates, and the table.
ABLATIONS_DIR = "ablations"
ABLATION_TABLES = ("ablations.md", "ablations.json")
FRACTION_STEPS = 128


@dataclass(frozen=True)
class CompressOptions:
    run_dir: Path
    family: str = "auto"
    target_cov_act: float = 0.99
    blocks: str | None = None
    model: str | None = None
    device: str | None = None


def check_options(opts: CompressOptions) -> None:
    if opts.family not in FAMILIES:
        raise BlockCertError(f"--family {opts.family!r} is not a family; use one of {'|'.join(FAMILIES)}")
    if not 0.0 < opts.target_cov_act <= 1.0:
        raise BlockCertError(f"--target-cov-act {opts.target_cov_act:g} is outside (0, 1]")


def _bisect(bench: Bench, text_of: Callable[[int], str], lo: int, hi: int) -> Measured | None:
    """The smallest knob in [lo, hi] whose surrogate is certified (assumed monotone in the knob), or None.

    First a bisection on activation coverage alone (replays only), then the full check, stitched suffix
    included, at the knob found; only if the loss coverage fails there does a second bisection above it
    recompute suffixes. Typically ⌈log₂ n⌉ + 1 replays and one suffix per search.
    """
    if hi < lo:
        return None
    irs: dict[int, object] = {}

    def ir_of(v: int):
        if v not in irs:
            irs[v] = derive_named(bench.exact, text_of(v), bench.evidence)
        return irs[v]

    def act(v: int) -> bool:
        return bench.passes_act(ir_of(v))

    def full(v: int) -> Measured:
        return bench.measure(ir_of(v))

    v = _first(lo, hi, act)
    if v is None:
        return None
    m = full(v)
    if m.passed:
        return m
    seen: dict[int, Measured] = {}

    def certified(u: int) -> bool:
        seen[u] = full(u)
        return seen[u].passed

    u = _first(v + 1, hi, certified)
    return None if u is None else seen[u]


def _first(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest v in [lo, hi] with ok(v), for ok monotone (False..False True..True); None if none."""
    if hi < lo or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _lowrank_hi(bench: Bench, with_mlp: bool) -> int:
    """The largest R whose factors are smaller than the dense maps they replace (beyond it nothing is saved)."""
    shapes = [bench.exact.tensors[f"{n}.weight"].shape for n in linear_names(bench.exact, ATTENTION
                                                                               + (MLP if with_mlp else ()))]
    dense = sum(o * i for o, i in shapes)
    best = 0
    for r in range(1, lowrank.max_rank(bench.exact, with_mlp) + 1):
        if sum(r * (o + i) if r < min(o, i) else o * i for o, i in shapes) < dense:
            best = r
    return best


def _fraction(j: int) -> str:
    return repr(j / FRACTION_STEPS)


def search(bench: Bench, family: str) -> list[Measured]:
    """The best certified candidate of each search the family runs (smallest first)."""
    heads = bench.exact.spec.attention.num_heads
    found: list[Measured | None] = []
    if family in ("lowrank", "auto"):
        found.append(_bisect(bench, lambda r: f"lowrank:{r}", 1, _lowrank_hi(bench, False)))
        found.append(_bisect(bench, lambda r: f"lowrank:{r},mlp", 1, _lowrank_hi(bench, True)))
    if family in ("prune-heads", "auto"):
        found.append(_bisect(bench, lambda k: f"prune-heads:{k}", 1, heads - 1))
    if family in ("prune-neurons", "auto"):
        found.append(_bisect(bench, lambda j: f"prune-neurons:{_fraction(j)}", 1, FRACTION_STEPS - 1))
    if family in ("int8", "auto"):
        found.append(_bisect(bench, lambda _: "int8", 1, 1))
    if family == "auto":
        att = found[0]
        if att is not None:  # low-rank attention with pruned neurons
            r = att.ir.spec.surrogate
            found.append(_bisect(bench, lambda j: f"{r}+prune-neurons:{_fraction(j)}", 1, FRACTION_STEPS - 1))
        if found[4] is not None:  # pruned neurons stored int8
            found.append(_bisect(bench, lambda j: f"prune-neurons:{_fraction(j)}+int8", 1, FRACTION_STEPS - 1))
    return sorted((m for m in found if m is not None), key=lambda m: (m.bytes, m.ir.spec.surrogate))


def compress_block(bench: Bench, family: str):
    """(choice record, new certificate and files or None when the block keeps its surrogate)."""
    found = search(bench, family)
    smaller = [m for m in found if m.bytes < bench.native_bytes]
    old = bench.cert
    if not smaller:
        size = old.size.surrogate_bytes if old.size is not None else bench.native_bytes
        choice = BlockChoice(block_index=bench.i, chosen=bench.current.spec.surrogate,
                             tried=tuple(m.ir.spec.surrogate for m in found), native_bytes=bench.native_bytes,
                             bytes=size, byte_ratio=size / bench.native_bytes, certified=old.certified,
                             cov_act=old.metrics.cov_act, epsilon=old.metrics.epsilon, replays=bench.replays,
                             suffix_recomputations=bench.suffixes)
        return choice, None
    best = smaller[0]
    cert, files = bench.certify(best.ir, best.loss)
    choice = BlockChoice(block_index=bench.i, chosen=best.ir.spec.surrogate,
                         tried=tuple(m.ir.spec.surrogate for m in found), native_bytes=bench.native_bytes,
                         bytes=cert.size.surrogate_bytes, byte_ratio=cert.size.byte_ratio, certified=cert.certified,
                         cov_act=cert.metrics.cov_act, epsilon=cert.metrics.epsilon, replays=bench.replays,
                         suffix_recomputations=bench.suffixes)
    return choice, (cert, files)


def remove_ablations(run_dir: Path) -> None:
    """Remove what `blockcert ablate` wrote under RUN/ablations/ (its runs and its table), nothing else."""
    root = run_dir / ABLATIONS_DIR
    for name in ABLATIONS:
        if (root / name).is_dir() and not (root / name).is_symlink():
            shutil.rmtree(root / name)
    for name in ABLATION_TABLES:
        (root / name).unlink(missing_ok=True)
    if root.is_dir() and not root.is_symlink() and not any(root.iterdir()):
        root.rmdir()


def _stale_files(run_dir: Path) -> tuple[str, ...]:
    """STALE, and the Lean files `blockcert lean` wrote beside formal_run.json (the module it names; the
    run package's lakefile and toolchain, which build that module)."""
    try:
        info = read_json(run_dir / FORMAL_FILE, "formal run")
    except BlockCertError:
        return STALE
    lean_file = info.get("lean_file") if isinstance(info, dict) else None
    if not (isinstance(lean_file, str) and lean_file.endswith(".lean") and "/" not in lean_file
            and "\\" not in lean_file and not lean_file.startswith(".")):
        return STALE
    package = ("lakefile.lean", "lean-toolchain") if info.get("lean_module") == lean_file[: -len(".lean")] else ()
    return (*STALE, lean_file, *package)


def rewrite_blocks(run_dir: Path, rc: RunContext, new: dict[int, tuple], extra: dict[str, bytes]) -> None:
    """Replace the given blocks' files and certificates, rebuild summary.json; stale run files go first."""
    stale = _stale_files(run_dir)
    for name in stale:
        (run_dir / name).unlink(missing_ok=True)
    remove_ablations(run_dir)
    summary = rc.summary
    certs, files = [], dict(extra)
    for e in summary.blocks:
        if e.index in new:
            cert, block_files = new[e.index]
            files.update(block_files)
        else:
            cert = block_certificate(run_dir, summary, e.index)
        certs.append(cert)
    s = summary_of(summary.model, summary.prompts, summary.thresholds, summary.policy, certs)
    if summary.files:  # the manifest lists every file: the rewritten ones by their new digests
        rewritten = tuple(f"block_{i:03d}/" for i in new)
        gone = (*rewritten, *(f"{ABLATIONS_DIR}/{name}/" for name in ABLATIONS))
        tables = {f"{ABLATIONS_DIR}/{name}" for name in ABLATION_TABLES}
        listed = {rel: d for rel, d in summary.files.items()
                  if rel not in stale and rel not in tables and not rel.startswith(gone)}
        listed.update({rel: sha256_bytes(data) for rel, data in files.items()})
        s = s.with_files(listed)
    files[layout.SUMMARY] = json_bytes(s.model_dump(mode="json"))
    save_files(files, run_dir)


def open_run(run_dir: Path, model: str | None, device: str | None, lm: LoadedModel | None = None) -> RunContext:
    summary = load_run_summary(run_dir)
    return RunContext(run_dir, summary, lm if lm is not None else load_run_model(summary, model, device))


def run_compress(opts: CompressOptions, lm: LoadedModel | None = None) -> CompressReport:
    check_options(opts)
    summary = load_run_summary(opts.run_dir)
    blocks = select_blocks(summary, opts.blocks)
    rc = open_run(opts.run_dir, opts.model, opts.device, lm)
    choices, new = [], {}
    for i in track(blocks, f"compressing ({opts.family})", total=len(blocks)):
        choice, written = compress_block(rc.bench(i, opts.target_cov_act), opts.family)
        choices.append(choice)
        if written is not None:
            new[i] = written
    report = CompressReport(family=opts.family, target_cov_act=opts.target_cov_act, blocks=tuple(choices))
    rewrite_blocks(opts.run_dir, rc, new, {COMPRESS_FILE: json_bytes(report.model_dump(mode="json"))})
    say(f"compressed {len(new)} of {len(blocks)} block(s); wrote {opts.run_dir / COMPRESS_FILE}")
    return report


def extract_ranked(opts: ExtractOptions) -> RunSummary:
    """`blockcert extract` for any kind: kinds ranked on the traces (prune-heads, prune-neurons) are derived
    after tracing, from the certification traces of an exact-copy run, and the blocks then re-certified.
    The kind's arguments are checked against the model before anything is written."""
    parse_text(opts.surrogate)
    if not needs_traces(opts.surrogate):
        return run_extract(opts)
    say(f"loading {opts.model} ({opts.dtype}, {opts.device})")
    lm = load_model(opts.model, opts.dtype, opts.device)
    check_text(NativeModel(lm).extract_ir(0), opts.surrogate)
    run_extract(replace(opts, surrogate="exact"), lm=lm)
    apply_surrogate(opts.out, opts.surrogate, RunContext(opts.out, load_run_summary(opts.out), lm))
    return load_run_summary(opts.out)


def parse_text(text: str) -> None:
    for part in text.split("+"):
        parse_kind(part)


def apply_surrogate(run_dir: Path, text: str, rc: RunContext) -> None:
    """Re-derive every block of a saved run as kind `text`, ranked on its certification traces."""
    new = {}
    for i in track([e.index for e in rc.summary.blocks], f"deriving {text}", total=len(rc.summary.blocks)):
        bench = rc.bench(i, 0.0)
        new[i] = bench.certify(derive_named(bench.exact, text, bench.evidence))
    rewrite_blocks(run_dir, rc, new, {})
