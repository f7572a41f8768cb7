"""Measuring a candidate surrogate of one block of a saved run: what `compress` and `ablate` share.

A candidate is replayed on the block's stored (certified) traces; its loss coverage needs the stitched
suffix, which is recomputed with the native model (arch.native) exactly as extraction does it (same
batch, same chunks of `BATCH` prompts), so `blockcert verify --model` re-derives the same losses. The
suffix is the expensive part: `Bench.measure` computes it only when the cheap activation check passes,
and counts both, so the cost of a search is reported, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from blockcert.arch.loading import LoadedModel
from blockcert.arch.native import NativeModel, next_token_nll
from blockcert.core.batch import Batch
from blockcert.core.digest import sha256_bytes
from blockcert.core.exact import meets
from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR
from blockcert.core.metrics import BlockMetrics, block_metrics, verdict
from blockcert.core.replay import replay
from blockcert.core.traces import LossTrace
from blockcert.errors import BlockCertError
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.run_reader import (
    VERIFY_HINT,
    block_certificate,
    certified_batch,
    load_certified_ir,
    load_certified_traces,
)
from blockcert.surrogates import Evidence, weights_size
from blockcert.workflows.extract import _certify_block

BATCH = 8  # prompts per native forward: the chunking extraction uses (workflows/extract.ExtractOptions)


@dataclass(frozen=True)
class Measured:
    ir: BlockIR
    metrics: BlockMetrics | None  # None: refused on activation coverage alone, no suffix computed
    passed: bool
    bytes: int
    loss: LossTrace | None


class RunContext:
    """The native model and the run's certified batch, shared by every block."""

    def __init__(self, run_dir: Path, summary: RunSummary, lm: LoadedModel):
        self.run_dir, self.summary, self.lm = run_dir, summary, lm
        self.native = NativeModel(lm)
        self.batch: Batch = certified_batch(run_dir, summary, lm.pad_token_id)
        n = self.batch.ids.shape[0]
        self.chunks = []
        for lo in range(0, n, BATCH):
            b = self.batch.rows(lo, min(lo + BATCH, n))
            _, ctx = self.native.embed(b)
            self.chunks.append((lo, b, ctx))
        self.prompts_bytes = (run_dir / layout.PROMPTS).read_bytes()

    def bench(self, i: int, target_cov_act: float) -> Bench:
        return Bench(self, i, target_cov_act)


class Bench:
    """Block i of the run: its exact copy, certified traces and base losses, and the run's policy."""

    def __init__(self, rc: RunContext, i: int, target_cov_act: float):
        self.rc, self.i, self.target = rc, i, target_cov_act
        self.cert: BlockCertificate = block_certificate(rc.run_dir, rc.summary, i)
        if self.cert.stored_trace_dtype != rc.summary.model.dtype:  # stitched losses start from stored x_in
            raise BlockCertError(f"block {i}: its traces are stored as {self.cert.trace_dtype} (extract "
                                 "--trace-dtype); compressing re-measures stitched losses from the stored block "
                                 "inputs, which must be the model's own: re-extract without --trace-dtype")
        self.trace, self.base = load_certified_traces(rc.run_dir, self.cert)
        self.current = load_certified_ir(rc.run_dir, self.cert)  # the run's own surrogate of the block
        if sha256_bytes(rc.prompts_bytes) != self.cert.artifacts.get(layout.PROMPTS):
            raise BlockCertError(f"block {i}: {layout.PROMPTS} changed since certification; {VERIFY_HINT}")
        self.exact = rc.native.extract_ir(i)
        self.native_bytes = weights_size(self.exact).bytes
        self.evidence = Evidence(self.trace, self.cert.prompts.token_ids_sha256)
        self.replays = 0
        self.suffixes = 0

    @torch.no_grad()
    def stitched(self, ir: BlockIR) -> LossTrace:
        """Per-token losses with only this block replaced by `ir` (the suffix recomputed natively)."""
        self.suffixes += 1
        parts = []
        for lo, b, ctx in self.rc.chunks:
            hi = lo + b.ids.shape[0]
            x = self.trace.x_in[lo:hi].to(self.rc.native.device)
            x_hat = run_block(ir, x, b.valid.to(x.device), b.positions.to(x.device))
            parts.append(next_token_nll(self.rc.native.run_from(self.i + 1, x_hat, ctx), b)[0])
        return LossTrace(self.base.base_nll, torch.cat(parts), self.base.loss_ok)

    def passes_act(self, ir: BlockIR) -> bool:
        """The cheap half of the check: activation coverage ≥ max(α_act, target), from a replay alone."""
        self.replays += 1
        e = replay(ir, self.trace).errors[self.trace.valid]
        covered = int((e <= self.cert.thresholds.tau_act).sum())
        return meets(covered, int(e.numel()), max(self.cert.policy.alpha_act, self.target))

    def measure(self, ir: BlockIR, need_target: bool = True) -> Measured:
        """Certified under the run's policy and (with need_target) cov_act ≥ the target?"""
        self.replays += 1
        r = replay(ir, self.trace)
        size = weights_size(ir).bytes
        e = r.errors[self.trace.valid]
        n = int(e.numel())
        covered = int((e <= self.cert.thresholds.tau_act).sum())
        need = max(self.cert.policy.alpha_act, self.target if need_target else 0.0)
        if not meets(covered, n, need):
            return Measured(ir, None, False, size, None)
        loss = self.stitched(ir)
        m = block_metrics(r.errors, r.out_norms, self.trace.valid, r.path_ok, loss.base_nll, loss.stitched_nll,
                          loss.loss_ok, self.cert.thresholds)
        ok = verdict(m, self.cert.policy)[0] and (not need_target or meets(m.act_covered, m.n_tokens, self.target))
        return Measured(ir, m, ok, size, loss)

    def certify(self, ir: BlockIR, loss: LossTrace | None = None):
        """The block's certificate and files for surrogate `ir` (the losses recomputed if not given)."""
        loss = loss if loss is not None else self.stitched(ir)
        c = self.cert
        return _certify_block(self.rc.prompts_bytes, self.i, c.model, c.prompts, c.thresholds, c.policy,
                              self.rc.summary.model.dtype, ir, self.trace, loss, native_ir=self.exact,
                              trace_dtype=c.trace_dtype, rounding=c.trace_rounding)  # traces stored as before
