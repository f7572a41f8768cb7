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

from . import layout
from .certificate import BlockCertificate, load_model_file
from .errors import BlockCertError
from .extract import parse_blocks
from .files import canonical_json, read_json, resolve_inside, sha256_bytes
from .fullmodel import index_ranges
from .ir import BlockIR, BlockSpec
from .loading import LoadedModel, load_model
from .native import Batch, batch_from_token_ids
from .prompts import load_prompts
from .summary import RunSummary
from .traces import BlockTrace, LossTrace

VERIFY_HINT = "run `blockcert verify` on the run directory to see everything that is wrong"


def load_run(run_dir: Path) -> RunSummary:
    if not run_dir.is_dir():
        raise BlockCertError(f"run directory {run_dir} does not exist")
    if not (run_dir / layout.SUMMARY).is_file():
        raise BlockCertError(f"{run_dir} holds no {layout.SUMMARY}: not a complete run; run `blockcert extract` first")
    return load_model_file(run_dir / layout.SUMMARY, RunSummary, "run summary")


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
    if not path.is_file():
        raise BlockCertError(f"block {index}: certificate {entry.certificate} is missing; rerun `blockcert extract`")
    cert = load_model_file(path, BlockCertificate, f"block {index} certificate")
    if cert.body_digest() != cert.digest or cert.digest != entry.digest or cert.block_index != index:
        raise BlockCertError(f"block {index}: certificate does not match its digest or {layout.SUMMARY}; {VERIFY_HINT}")
    if cert.model.weights_sha256 != summary.model.weights_sha256:
        raise BlockCertError(
            f"block {index}: surrogate was extracted from a different model (weights "
            f"{cert.model.weights_sha256[:16]}…, the run's model {summary.model.weights_sha256[:16]}…); re-extract it"
        )
    return cert


def certified_bytes(run_dir: Path, cert: BlockCertificate, name: str) -> bytes:
    """The bytes of block artifact `name`, refused unless they hash to what the certificate records."""
    rel = f"block_{cert.block_index:03d}/{name}"
    digest = cert.artifacts.get(rel)
    if digest is None:
        raise BlockCertError(f"block {cert.block_index}: certificate does not list {rel}; {VERIFY_HINT}")
    path = resolve_inside(run_dir, rel)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BlockCertError(f"block {cert.block_index}: file {rel} is missing; rerun `blockcert extract`") from None
    if sha256_bytes(data) != digest:
        raise BlockCertError(
            f"block {cert.block_index}: {rel} changed since certification (SHA-256 mismatch); {VERIFY_HINT}"
        )
    return data


def _tensors(run_dir: Path, cert: BlockCertificate, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    data = certified_bytes(run_dir, cert, name)
    try:
        return load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise BlockCertError(f"block {cert.block_index}: {name} is not a readable safetensors file ({e})") from None


def load_certified_ir(run_dir: Path, cert: BlockCertificate, device: torch.device | str = "cpu") -> BlockIR:
    import json

    try:
        spec = BlockSpec.model_validate(json.loads(certified_bytes(run_dir, cert, layout.IR_SPEC)))
    except (ValueError, json.JSONDecodeError) as e:
        raise BlockCertError(f"block {cert.block_index}: {layout.IR_SPEC} is not a valid IR spec ({e})") from None
    if spec.block_index != cert.block_index:
        raise BlockCertError(f"block {cert.block_index}: {layout.IR_SPEC} describes block {spec.block_index}")
    ir = BlockIR(spec, _tensors(run_dir, cert, layout.IR_TENSORS))
    return ir.to(device=device) if str(device) != "cpu" else ir


def load_certified_traces(run_dir: Path, cert: BlockCertificate) -> tuple[BlockTrace, LossTrace]:
    from dataclasses import fields

    out = []
    for name, cls in ((layout.TRACES, BlockTrace), (layout.LOSSES, LossTrace)):
        d = _tensors(run_dir, cert, name)
        try:
            out.append(cls(**{f.name: d[f.name] for f in fields(cls)}))
        except KeyError as e:
            raise BlockCertError(f"block {cert.block_index}: {name} lacks tensor {e.args[0]!r}") from None
    return out[0], out[1]


def load_certified_prompt_epsilons(run_dir: Path, cert: BlockCertificate) -> tuple[float, ...]:
    """ε of each prompt (max over its tokens) from the block's certified metrics file; their max is ε itself."""
    import json

    try:
        rows = json.loads(certified_bytes(run_dir, cert, layout.METRICS))["per_prompt"]
        eps = tuple(float(r["epsilon"]) for r in sorted(rows, key=lambda r: r["prompt"]))
    except (ValueError, KeyError, TypeError) as e:
        raise BlockCertError(f"block {cert.block_index}: {layout.METRICS} has no per-prompt ε ({e})") from None
    if not eps or max(eps) != cert.metrics.epsilon:
        raise BlockCertError(f"block {cert.block_index}: the per-prompt ε in {layout.METRICS} do not match the "
                             "certificate's ε; run `blockcert verify`")
    return eps


def certified_token_ids(run_dir: Path, summary: RunSummary) -> list[list[int]]:
    data = read_json(run_dir / layout.PROMPTS, "prompts file")
    texts, ids = data.get("prompts"), data.get("token_ids")
    if (
        not isinstance(texts, list)
        or not isinstance(ids, list)
        or sha256_bytes(canonical_json(texts).encode()) != summary.prompts.sha256
        or sha256_bytes(canonical_json(ids).encode()) != summary.prompts.token_ids_sha256
    ):
        raise BlockCertError(f"{layout.PROMPTS} does not hash to the certified prompt set; {VERIFY_HINT}")
    return ids


def certified_batch(run_dir: Path, summary: RunSummary, lm: LoadedModel) -> Batch:
    """The exact token ids the blocks were certified on (never re-tokenised)."""
    pad = getattr(lm.tokenizer, "pad_token_id", None)
    return batch_from_token_ids(certified_token_ids(run_dir, summary), pad if pad is not None else 0)


def require_certified_prompts(summary: RunSummary, spec: str) -> None:
    """Commands that extend the block certificates must run on the prompts those were certified on."""
    ps = load_prompts(spec)
    if ps.sha256 != summary.prompts.sha256:
        raise BlockCertError(
            f"prompt set {spec!r} ({len(ps.prompts)} prompts) is not the one the run was certified on "
            f"({summary.prompts.name!r}, {summary.prompts.n_prompts} prompts); omit --prompts, or use "
            "`blockcert shift` to measure on other prompts"
        )


def load_run_model(summary: RunSummary, spec: str | None, device: str | None) -> LoadedModel:
    """The run's model, in the run's dtype; refused unless its weights hash to the certified ones."""
    name = spec or summary.model.name
    try:
        lm = load_model(name, summary.model.dtype, device or summary.model.device)
    except BlockCertError as e:
        if spec is None:
            raise BlockCertError(f"{e} (the run records model {name!r}; pass --model)") from None
        raise
    if lm.weights_sha256 != summary.model.weights_sha256:
        raise BlockCertError(
            f"model {name!r} has weights {lm.weights_sha256[:16]}…, but the run's surrogates were extracted "
            f"from weights {summary.model.weights_sha256[:16]}…: not the same model"
        )
    return lm
