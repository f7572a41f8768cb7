"""Reading a certified run back as trustworthy inputs for the full-model and sensitivity commands.

Every reader here checks what it reads against what was certified: block certificates against their
own digest and summary.json, artifacts against the SHA-256 their certificate records (hashing the
very bytes that are then parsed, so nothing can change in between), the model against the weights
hash, prompts against the certified prompt hash. Any mismatch is one `BlockCertError` line that says
what to do; nothing is written by these functions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from blockcert.core.batch import Batch, batch_from_token_ids
from blockcert.core.digest import canonical_json, sha256_bytes
from blockcert.core.ir import BlockIR, layout_problem, native_heads
from blockcert.core.selection import parse_blocks
from blockcert.core.traces import BlockTrace, LossTrace
from blockcert.errors import BlockCertError
from blockcert.records.bound import BOUND_FILE, BoundArtifact
from blockcert.records.certificate import BlockCertificate
from blockcert.records.fullmodel import CERTIFICATE_FILE, FullModelCertificate, index_ranges
from blockcert.records.summary import RunSummary, disagreements
from blockcert.store import layout
from blockcert.store.files import read_inside, resolve_inside
from blockcert.store.manifest import load_manifest
from blockcert.store.prompts import load_prompts
from blockcert.store.records_io import parse_model
from blockcert.store.strict_json import StrictJsonError, parse_strict, read_regular
from blockcert.store.tensors import (
    decode_record,
    decode_spec,
    decode_tensors,
    ir_layout,
    loss_layout,
    trace_dtype_problem,
    trace_layout,
    widened,
)

MAX_ARTIFACT_BYTES = 8 << 30  # one block artifact; smollm2's largest (its traces) is ~30 MB

VERIFY_HINT = "run `blockcert verify` on the run directory to see everything that is wrong"


def load_run_summary(run_dir: Path) -> RunSummary:
    """The run's sealed manifest (store/manifest.py): refused when old, unsealed, edited or not strict JSON."""
    return load_manifest(Path(run_dir))


def select_blocks(summary: RunSummary, spec: str | None) -> list[int]:
    """The blocks to use: `spec` (indices, ranges or `all`), or every block the run has a surrogate for."""
    have = sorted(e.index for e in summary.blocks)
    if spec is None:
        if not have:
            raise BlockCertError("the run holds no block surrogates; run `blockcert extract` first")
        return have
    wanted = parse_blocks(spec, summary.model.num_layers)
    missing = [i for i in wanted if i not in have]
    if missing:
        raise BlockCertError(
            f"the run holds no surrogate for block(s) {index_ranges(missing)} (it has {index_ranges(have) or 'none'}); "
            f"extract them first: blockcert extract --blocks {index_ranges(missing)}"
        )
    return wanted


def block_certificate(run_dir: Path, summary: RunSummary, index: int) -> BlockCertificate:
    entry = next((e for e in summary.blocks if e.index == index), None)
    if entry is None:
        raise BlockCertError(f"block {index} is not listed in {layout.SUMMARY}")
    path = resolve_inside(run_dir, entry.certificate)
    if not path.exists():
        raise BlockCertError(f"block {index}: certificate {entry.certificate} is missing; rerun `blockcert extract`")
    data = read_inside(run_dir, entry.certificate, f"block {index} certificate")
    cert = parse_model(data, BlockCertificate, f"block {index} certificate {entry.certificate}")
    if cert.body_digest() != cert.digest or cert.digest != entry.digest or cert.block_index != index:
        raise BlockCertError(f"block {index}: certificate does not match its digest or {layout.SUMMARY}; {VERIFY_HINT}")
    if summary.files.get(entry.certificate) != sha256_bytes(data):
        raise BlockCertError(
            f"block {index}: {entry.certificate} is not the file {layout.SUMMARY} lists; {VERIFY_HINT}")
    problems = disagreements(summary, cert, entry)
    if problems:
        raise BlockCertError(f"block {index}: {problems[0]}; the block belongs to another run: re-extract it")
    return cert


def certified_bytes(run_dir: Path, cert: BlockCertificate, name: str) -> bytes:
    """The bytes of block artifact `name`, refused unless they hash to what the certificate records."""
    rel = name if name == layout.PROMPTS else f"block_{cert.block_index:03d}/{name}"  # prompts.json is shared
    digest = cert.artifacts.get(rel)
    if digest is None:
        raise BlockCertError(f"block {cert.block_index}: certificate does not list {rel}; {VERIFY_HINT}")
    path = resolve_inside(run_dir, rel)
    if not path.exists():
        raise BlockCertError(f"block {cert.block_index}: file {rel} is missing; rerun `blockcert extract`")
    data = read_regular(path, f"block {cert.block_index}: {rel}", MAX_ARTIFACT_BYTES)
    if sha256_bytes(data) != digest:
        raise BlockCertError(
            f"block {cert.block_index}: {rel} changed since certification (SHA-256 mismatch); {VERIFY_HINT}"
        )
    return data


def load_certified_ir(run_dir: Path, cert: BlockCertificate, device: torch.device | str = "cpu") -> BlockIR:
    what = f"block {cert.block_index}: {layout.IR_SPEC}"
    spec = decode_spec(certified_bytes(run_dir, cert, layout.IR_SPEC), what)
    if spec.block_index != cert.block_index:
        raise BlockCertError(f"block {cert.block_index}: {layout.IR_SPEC} describes block {spec.block_index}")
    what = f"block {cert.block_index}: {layout.IR_TENSORS}"
    # The header must declare exactly the tensors the spec implies before the interpreter sees any of them.
    want, optional = ir_layout(spec, cert.model.dtype)
    tensors = decode_tensors(certified_bytes(run_dir, cert, layout.IR_TENSORS), what, want, optional)
    _check_ir_values(spec, tensors, what)
    ir = BlockIR(spec, tensors)
    return ir.to(device=device) if str(device) != "cpu" else ir


def _check_ir_values(spec, tensors: dict[str, torch.Tensor], what: str) -> None:
    problem = layout_problem(spec, {k: tuple(v.shape) for k, v in tensors.items()})
    if problem is not None:
        raise BlockCertError(f"{what}: {problem}")


def load_certified_traces(run_dir: Path, cert: BlockCertificate, spec=None) -> tuple[BlockTrace, LossTrace]:
    """The block's traces and losses, their headers checked against the shapes the run implies (prompts ×
    tokens × hidden size, the IR's head count) and their indices checked to lie in range."""
    n, t = trace_dims(run_dir, cert)
    if spec is None:
        spec = decode_spec(certified_bytes(run_dir, cert, layout.IR_SPEC),
                           f"block {cert.block_index}: {layout.IR_SPEC}")
    pre = f"block {cert.block_index}: "
    # x_in and x_out are stored in the certificate's trace dtype (the model's unless it declares one) and
    # widened, exactly, to the model's for every reader: the values replayed are the values stored.
    data = certified_bytes(run_dir, cert, layout.TRACES)
    problem = trace_dtype_problem(data, cert.stored_trace_dtype, pre + layout.TRACES)
    if problem is not None:
        raise BlockCertError(problem)
    tw = trace_layout(n, t, spec.hidden_size, native_heads(spec), cert.stored_trace_dtype)
    trace = widened(decode_record(data, BlockTrace, pre + layout.TRACES, tw), cert.model.dtype)
    loss = decode_record(certified_bytes(run_dir, cert, layout.LOSSES), LossTrace, pre + layout.LOSSES,
                         loss_layout(n, t))
    if t and (int(trace.positions.min()) < 0 or int(trace.native_argmax.min()) < 0
              or int(trace.native_argmax.max()) >= t):
        raise BlockCertError(pre + f"{layout.TRACES}: positions or native_argmax out of range")
    return trace, loss


def trace_dims(run_dir: Path, cert: BlockCertificate) -> tuple[int, int]:
    """(prompts, longest prompt in tokens) from the certified prompts file."""
    ids = _token_ids(certified_bytes(run_dir, cert, layout.PROMPTS), cert.prompts, f"block {cert.block_index}")
    return len(ids), max((len(r) for r in ids), default=0)


def _token_ids(data: bytes, prompts, what: str) -> list[list[int]]:
    try:
        obj = parse_strict(data)
    except StrictJsonError as e:
        raise BlockCertError(f"{what}: {layout.PROMPTS} is not strict JSON: {e}") from None
    texts = obj.get("prompts") if isinstance(obj, dict) else None
    ids = obj.get("token_ids") if isinstance(obj, dict) else None
    if (not isinstance(texts, list) or not isinstance(ids, list)
            or not all(isinstance(r, list) and all(type(v) is int and v >= 0 for v in r) for r in ids)
            or sha256_bytes(canonical_json(texts).encode()) != prompts.sha256
            or sha256_bytes(canonical_json(ids).encode()) != prompts.token_ids_sha256
            or len(ids) != prompts.n_prompts):
        raise BlockCertError(f"{what}: {layout.PROMPTS} does not hash to the certified prompt set; {VERIFY_HINT}")
    return ids


def load_certified_prompt_epsilons(run_dir: Path, cert: BlockCertificate) -> tuple[float, ...]:
    """ε of each prompt (max over its tokens) from the block's certified metrics file; their max is ε itself."""
    try:
        rows = parse_strict(certified_bytes(run_dir, cert, layout.METRICS))["per_prompt"]
        eps = tuple(float(r["epsilon"]) for r in sorted(rows, key=lambda r: r["prompt"]))
    except (StrictJsonError, ValueError, KeyError, TypeError) as e:
        raise BlockCertError(f"block {cert.block_index}: {layout.METRICS} has no per-prompt ε ({e})") from None
    if len(eps) != cert.prompts.n_prompts:
        raise BlockCertError(f"block {cert.block_index}: {layout.METRICS} has {len(eps)} per-prompt rows for "
                             f"{cert.prompts.n_prompts} prompts")
    if not eps or max(eps) != cert.metrics.epsilon:
        raise BlockCertError(f"block {cert.block_index}: the per-prompt ε in {layout.METRICS} do not match the "
                             "certificate's ε; run `blockcert verify`")
    return eps


def certified_token_ids(run_dir: Path, summary: RunSummary) -> list[list[int]]:
    data = read_inside(run_dir, layout.PROMPTS, "prompts file")
    if summary.files.get(layout.PROMPTS) != sha256_bytes(data):
        raise BlockCertError(f"{layout.PROMPTS} is not the file {layout.SUMMARY} lists; {VERIFY_HINT}")
    return _token_ids(data, summary.prompts, "the run")


def certified_batch(run_dir: Path, summary: RunSummary, pad_token_id: int | None = None) -> Batch:
    """The exact token ids the blocks were certified on (never re-tokenised)."""
    return batch_from_token_ids(certified_token_ids(run_dir, summary), pad_token_id if pad_token_id is not None else 0)


def require_certified_prompts(summary: RunSummary, spec: str) -> None:
    """Commands that extend the block certificates must run on the prompts those were certified on."""
    ps = load_prompts(spec)
    if ps.sha256 != summary.prompts.sha256:
        raise BlockCertError(
            f"prompt set {spec!r} ({len(ps.prompts)} prompts) is not the one the run was certified on "
            f"({summary.prompts.name!r}, {summary.prompts.n_prompts} prompts); omit --prompts, or use "
            "`blockcert shift` to measure on other prompts"
        )


def load_full_certificate(run_dir: Path) -> FullModelCertificate:
    """The run's full-model certificate, refused unless it and its evaluation file are intact."""
    if not resolve_inside(run_dir, CERTIFICATE_FILE).exists():
        raise BlockCertError(f"{run_dir} holds no {CERTIFICATE_FILE}; run `blockcert stitch` first")
    cert = parse_model(read_inside(run_dir, CERTIFICATE_FILE, "full-model certificate"), FullModelCertificate,
                       f"full-model certificate {CERTIFICATE_FILE}")
    if cert.body_digest() != cert.digest:
        raise BlockCertError(f"{CERTIFICATE_FILE} does not match its digest (edited?); rerun `blockcert stitch`")
    ev = resolve_inside(run_dir, cert.evaluation_file)
    if not ev.is_file() or sha256_bytes(read_regular(ev, cert.evaluation_file)) != cert.evaluation_sha256:
        raise BlockCertError(f"{cert.evaluation_file} is missing or changed since stitching; rerun `blockcert stitch`")
    return cert


def stitched_block_certificates(
    run_dir: Path, summary: RunSummary, cert: FullModelCertificate
) -> dict[int, BlockCertificate]:
    """The block certificates a full-model certificate stands on, as it recorded them."""
    out = {}
    for ref in cert.block_certificates:
        bc = block_certificate(run_dir, summary, ref.index)
        if bc.digest != ref.digest:
            raise BlockCertError(
                f"block {ref.index}: its certificate changed since stitching; rerun `blockcert stitch`"
            )
        out[ref.index] = bc
    return out


def load_bound_artifact(run_dir: Path) -> BoundArtifact:
    """RUN_DIR/bound.json, refused unless it matches its schema, its digest, and the run's block certificates."""

    if not resolve_inside(run_dir, BOUND_FILE).exists():
        raise BlockCertError(f"{run_dir} holds no {BOUND_FILE}; run `blockcert bound {run_dir}` first")
    art = parse_model(read_inside(run_dir, BOUND_FILE, "bound file"), BoundArtifact, f"bound file {BOUND_FILE}")
    if art.body_digest() != art.digest:
        raise BlockCertError(f"{BOUND_FILE} does not match its digest (edited?); rerun `blockcert bound`")
    summary = load_run_summary(run_dir)
    if art.block_certificates != {str(e.index): e.digest for e in summary.blocks}:
        raise BlockCertError(f"{BOUND_FILE} was computed for other block certificates; rerun `blockcert bound`")
    return art
