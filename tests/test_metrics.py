"""Recorded numbers are machine-independent: exact sums, so full coverage is exactly 1 and order never matters."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockcert.core.metrics import Thresholds, block_metrics, exact_sum, row_norms
from blockcert.present.tables import block_table, render_text
from blockcert.records.summary import RunSummary
from blockcert.store.run_reader import block_certificate


def _case(seed: int, p: int = 5, t: int = 7):
    g = torch.Generator().manual_seed(seed)
    errors = torch.rand(p, t, generator=g, dtype=torch.float64) * 0.02
    out_norms = torch.rand(p, t, generator=g, dtype=torch.float64) + 1
    valid = torch.ones(p, t, dtype=torch.bool)
    valid[-1, -2:] = False
    path_ok = torch.rand(p, t, generator=g) > 0.2
    base = torch.rand(p, t - 1, generator=g, dtype=torch.float64) * 7
    stitched = base + (torch.rand(p, t - 1, generator=g, dtype=torch.float64) - 0.5) * 2e-3
    ok = valid[:, 1:] & valid[:, :-1]
    return errors, out_norms, valid, path_ok, base, stitched, ok


def test_full_loss_coverage_is_exactly_one():
    # Weights of mixed magnitude, where a masked sum and a full sum in different orders disagree in the last bit.
    errors, out_norms, valid, path_ok, base, _stitched, ok = _case(1)
    base = base * torch.logspace(-8, 8, base.numel(), dtype=torch.float64).reshape(base.shape)
    m = block_metrics(errors, out_norms, valid, path_ok, base, base.clone(), ok, Thresholds())
    assert m.cov_loss == 1.0 and m.loss_covered_weight == m.loss_total_weight


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), perm_seed=st.integers(0, 10_000))
def test_permuting_prompts_changes_no_recorded_number(seed, perm_seed):
    args = _case(seed)
    perm = torch.randperm(args[0].shape[0], generator=torch.Generator().manual_seed(perm_seed))
    a = block_metrics(*args, Thresholds())
    b = block_metrics(*(x[perm] for x in args), Thresholds())
    assert a == b  # every field, bit for bit


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_sums_and_norms_are_correctly_rounded_whatever_the_order(seed):
    g = torch.Generator().manual_seed(seed)
    v = (torch.rand(3, 257, generator=g, dtype=torch.float64) - 0.5) * torch.logspace(-6, 6, 257, dtype=torch.float64)
    exact = [sum(Fraction(x) for x in row.tolist()) for row in v]
    assert [exact_sum(row) for row in v] == [float(e) for e in exact]
    perm = torch.randperm(257, generator=g)
    assert torch.equal(row_norms(v), row_norms(v[:, perm]))
    sq = [math.fsum(x * x for x in row.tolist()) for row in v]
    assert row_norms(v).tolist() == [math.sqrt(s) for s in sq]


def test_block_table_fits_80_columns_without_cutting_a_number(toy_run):
    summary = RunSummary.model_validate_json((toy_run / "summary.json").read_text())
    worst = summary.model_copy(update={"blocks": tuple(
        b.model_copy(update={"epsilon": 1.2345678e-05, "mae": 9.87654e-07, "max_relative_error": 3.3333e-10})
        for b in summary.blocks)})
    text = render_text(block_table(worst), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for shown in ("1.23e-05", "9.88e-07", "3.33e-10"):
        assert text.count(shown) == len(summary.blocks)


def test_sized_block_table_fits_80_columns_without_cutting_a_number(toy_run):
    """`blockcert show` / the demo print the table with each surrogate's kind and size: the last column (cov_loss)
    must not be cropped at 80 columns (it was, with a fixed width for the kind)."""
    summary = RunSummary.model_validate_json((toy_run / "summary.json").read_text())
    certs = {e.index: block_certificate(toy_run, summary, e.index) for e in summary.blocks}
    worst = summary.model_copy(update={"blocks": tuple(
        b.model_copy(update={"epsilon": 1.2345678e-05, "mae": 9.87654e-07, "cov_loss": 0.98765})
        for b in summary.blocks)})
    text = render_text(block_table(worst, certs), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for shown in ("1.23e-05", "9.88e-07", "0.9877"):
        assert text.count(shown) == len(summary.blocks)
