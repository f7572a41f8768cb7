"""Surrogate families on small random models: exact at full size, smaller for real, ablations measured."""

from __future__ import annotations

import pytest
import torch

from blockcert.arch.loading import load_model
from blockcert.arch.native import NativeModel, encode
from blockcert.core.interpreter import run_block
from blockcert.core.traces import BlockTrace
from blockcert.errors import BlockCertError
from blockcert.store.prompts import bundled
from blockcert.surrogates import Evidence, ablate, densify, derive_named, weights_size

F64 = torch.float64


@pytest.fixture(scope="module")
def block(toy_models):
    """Block 0 of the GQA toy in float64: its exact IR, inputs, native output and a trace to rank on."""
    lm = load_model(str(toy_models["llama-gqa"]), "float64")
    native = NativeModel(lm)
    b = encode(lm, bundled("stress").prompts)
    x, ctx = native.embed(b)
    y = native.block(0, x, ctx)
    trace = BlockTrace(x, y, b.valid, b.positions, torch.ones(1), torch.ones(1))
    return native.extract_ir(0), x, y, b, Evidence(trace, "test")


def _err(ir, block) -> float:
    _, x, y, b, _ = block
    return float((run_block(ir, x, b.valid, b.positions) - y).norm(dim=-1)[b.valid].max())


def _scale(block) -> float:
    _, _, y, b, _ = block
    return float(y.norm(dim=-1)[b.valid].max())


def test_lowrank_at_full_rank_reproduces_exact_through_two_factors(block):
    ex = block[0]
    r = min(ex.tensors["attn.q.weight"].shape)
    ir = derive_named(ex, f"lowrank:{r}", block[4])
    assert "attn.q.weight" not in ir.tensors and ir.tensors["attn.q.u"].shape[1] == r  # stored as factors
    assert _err(ir, block) <= 1e-12 * _scale(block)  # float64: the SVD reconstructs to rounding
    ir = derive_named(ex, f"lowrank:{r},mlp", block[4])
    assert "mlp.down.u" in ir.tensors
    assert _err(ir, block) <= 1e-12 * _scale(block)


def test_prune_all_heads_and_all_neurons_is_exact(block):
    ex = block[0]
    heads = ex.spec.attention.num_heads
    assert _err(derive_named(ex, f"prune-heads:{heads}", block[4]), block) == 0.0
    assert _err(derive_named(ex, "prune-neurons:1", block[4]), block) == 0.0


def _count(ir) -> tuple[int, int]:
    """Parameters and bytes counted directly from the IR's stored tensors (rotary tables aside)."""
    ts = [t for k, t in ir.tensors.items() if not k.startswith("rope.")]
    return sum(t.numel() for t in ts), sum(t.numel() * t.element_size() for t in ts)


@pytest.mark.parametrize("text", ["lowrank:4", "lowrank:4,mlp", "prune-heads:1", "prune-neurons:0.25", "int8",
                                  "lowrank:4+prune-neurons:0.5", "prune-neurons:0.5+int8"])
def test_a_compressed_surrogate_never_claims_a_size_it_does_not_have(block, text):
    ex = block[0]
    ir = derive_named(ex, text, block[4])
    params, nbytes = _count(ir)
    assert (weights_size(ir).parameters, weights_size(ir).bytes) == (params, nbytes)
    assert nbytes < _count(ex)[1]  # really smaller
    assert _count(densify(ir))[0] == _count(ex)[0]  # the dense form has the native shapes
    assert _err(densify(ir), block) - _err(ir, block) <= 1e-12 * _scale(block)  # and is the same function


def test_pruned_gqa_keeps_the_kv_heads_its_query_heads_read(block):
    ex = block[0]
    a = derive_named(ex, "prune-heads:1", block[4]).spec.attention
    groups = ex.spec.attention.num_heads // ex.spec.attention.num_kv_heads
    assert a.num_heads == 1 and a.num_kv_heads == 1
    assert a.heads.kept_kv == (a.heads.kept[0] // groups,) and a.heads.kv_of_head == (0,)
    assert a.heads.native_heads == ex.spec.attention.num_heads


def test_int8_stores_int8_and_the_interpreter_dequantises(block):
    ir = derive_named(block[0], "int8")
    assert ir.tensors["attn.q.q8"].dtype == torch.int8 and ir.tensors["mlp.down.q8"].dtype == torch.int8
    assert 0 < _err(ir, block) <= 5e-2 * _scale(block)


def test_inverting_the_mask_collapses_agreement(block):
    e = _err(ablate(block[0], "inverted-mask"), block)
    assert e > 1e-2 * _scale(block)


def test_wq_noise_error_grows_with_sigma(block):
    errs = [_err(ablate(block[0], "noise-wq", sigma=s, seed=3), block) for s in (0.01, 0.1, 0.5, 2.0)]
    assert errs == sorted(errs) and errs[0] > 0


def test_no_rope_and_zero_wv_are_explicit_in_the_ir(block):
    nr = ablate(block[0], "no-rope")
    assert nr.spec.attention.rope is False and not any(k.startswith("rope.") for k in nr.tensors)
    zv = ablate(block[0], "zero-wv")
    assert not zv.tensors["attn.v.weight"].any() and _err(zv, block) > 0


@pytest.mark.parametrize("text, says", [
    ("lowrank:0", "R=0 must be ≥ 1"), ("lowrank:x", "not a whole number"), ("lowrank:100000", "above the rank"),
    ("lowrank:4,attn", "unknown option"), ("prune-heads:99", "outside 1..4"), ("prune-heads:0", "outside 1..4"),
    ("prune-neurons:0", "outside (0, 1]"), ("prune-neurons:1.5", "outside (0, 1]"), ("nope:3", "unknown kind"),
    ("lowrank", "needs arguments"), ("int8:3", "takes no arguments"),
])
def test_bad_kind_arguments_are_one_line_naming_the_option(block, text, says):
    with pytest.raises(BlockCertError) as e:
        derive_named(block[0], text, block[4])
    msg = str(e.value)
    assert msg.startswith("--surrogate") and says in msg and "\n" not in msg
