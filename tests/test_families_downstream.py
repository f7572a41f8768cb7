"""Mistral, Qwen2, Phi-3, Qwen3 and Gemma 3 through every downstream command but `bound` (issue 16).

Two kinds of evidence, on small random models of each family (`arch/toy.py`):
- every surrogate kind (low rank, pruned heads, pruned neurons, int8, auto's combinations) and every
  ablation, derived from each block's exact IR, replays under BlockCert's interpreter as the family's own
  Hugging Face layer computes with the weights the surrogate stands for (its `densify` written into a copy
  of the layer; an ablation's rotary tables or mask handed to the layer instead of the model's), in float64;
- the commands on a saved run, end to end: extract, ablate, compress (each family), stitch, edit, lean,
  check, and `verify` after each.

`bound` is left out: its enclosures of Gemma's and Qwen3's numerics are tested in tests/test_bounds_families.py.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

import blockcert
from blockcert.arch.generate import greedy, native_generate, prompt_ids
from blockcert.arch.native import NativeModel, encode
from blockcert.arch.toy import build_toy_model
from blockcert.core.interpreter import attention_mask, run_block
from blockcert.core.ir import layout_problem
from blockcert.core.traces import BlockTrace
from blockcert.store.tensors import decode_spec, decode_tensors, ir_files, ir_layout
from blockcert.surrogates import ABLATIONS, Evidence, ablate, densify, derive_named

FAMILIES = {
    "mistral": "MistralForCausalLM", "qwen2-bias": "Qwen2ForCausalLM", "phi3-fused": "Phi3ForCausalLM",
    "qwen3-qknorm": "Qwen3ForCausalLM", "gemma3-window": "Gemma3ForCausalLM",
}
# Prompts of one length (no padding: HF's float64 Gemma turns fully padded windows into NaN), longer than
# Gemma's 4-token window, so the window really masks.
PROMPTS = ("The cat sat on the mat.", "A verifier checks a run", "Heads attend to the key")
KINDS = ("lowrank:8", "lowrank:8,mlp", "prune-heads:1", "prune-heads:3", "prune-neurons:0.5", "int8",
         "lowrank:8+prune-neurons:0.5", "prune-neurons:0.5+int8")
LOOSE = ("--tau-act", "100", "--tau-loss", "100")  # random toy weights: every candidate may be certified


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: ~50x faster than two threads


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream-models")
    return {v: build_toy_model(v, root / v) for v in FAMILIES}


# ---- the derived IRs against the family's own layer -------------------------------------------------------


def _write_dense(layer: torch.nn.Module, ts: dict[str, torch.Tensor]) -> None:
    """Put a dense IR's weights into a Hugging Face decoder layer (Phi-3's fused projections concatenated)."""
    att, mlp = layer.self_attn, layer.mlp
    with torch.no_grad():
        if hasattr(att, "qkv_proj"):
            att.qkv_proj.weight.copy_(torch.cat([ts[f"attn.{n}.weight"] for n in "qkv"]))
        else:
            for n in "qkv":
                proj = getattr(att, f"{n}_proj")
                proj.weight.copy_(ts[f"attn.{n}.weight"])
                if proj.bias is not None:
                    proj.bias.copy_(ts[f"attn.{n}.bias"])
        att.o_proj.weight.copy_(ts["attn.o.weight"])
        if hasattr(mlp, "gate_up_proj"):
            mlp.gate_up_proj.weight.copy_(torch.cat([ts["mlp.gate.weight"], ts["mlp.up.weight"]]))
        else:
            mlp.gate_proj.weight.copy_(ts["mlp.gate.weight"])
            mlp.up_proj.weight.copy_(ts["mlp.up.weight"])
        mlp.down_proj.weight.copy_(ts["mlp.down.weight"])


@torch.no_grad()
def _reference(layer, dense: dict, x: torch.Tensor, args_kwargs, **changes) -> torch.Tensor:
    """The family's own layer, on a copy holding `dense`'s weights, with some block arguments replaced."""
    ref = copy.deepcopy(layer)
    _write_dense(ref, dense)
    args, kwargs = args_kwargs
    out = ref(x, *args, **{**kwargs, **changes})
    return out[0] if isinstance(out, tuple) else out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _round_trip(ir) -> None:
    """The IR's files declare exactly the tensors it stores, in the form it declares (as `verify` reads them)."""
    files = ir_files(ir)
    spec = decode_spec(files["ir.json"], "ir.json")
    want, optional = ir_layout(spec, "float64")
    ts = decode_tensors(files["ir.safetensors"], "ir.safetensors", want, optional)
    assert layout_problem(spec, {k: tuple(v.shape) for k, v in ts.items()}) is None


@pytest.fixture(scope="module")
def native64(models):
    """Per family: the float64 model, its batch, and each block's (input, native output, arguments, exact IR)."""
    out = {}
    for v, path in models.items():
        lm = blockcert.load_model(str(path), "float64")
        native = NativeModel(lm)
        batch = encode(lm, PROMPTS)
        assert bool(batch.valid.all())  # one length: no padding
        x, ctx = native.embed(batch)
        blocks = []
        for i in range(len(native.layers)):
            y = native.block(i, x, ctx)
            blocks.append((x, y, ctx.of(i), native.extract_ir(i)))
            x = y
        out[v] = (native, batch, ctx, blocks)
    return out


def _evidence(native, batch, ctx, i, x, y, heads) -> Evidence:
    p, t = batch.ids.shape
    trace = BlockTrace(x, y, batch.valid, batch.positions, native.attention_mask_bool(ctx, batch, i),
                       torch.zeros((p, heads, t), dtype=torch.long))
    return Evidence(trace, "0" * 64)


@pytest.mark.parametrize("variant", list(FAMILIES))
def test_every_surrogate_kind_replays_as_the_family_layer_with_its_weights(native64, variant):
    native, batch, ctx, blocks = native64[variant]
    for i, (x, y, args_kwargs, exact) in enumerate(blocks):
        ev = _evidence(native, batch, ctx, i, x, y, exact.spec.attention.num_heads)
        assert _rel(run_block(exact, x, batch.valid, batch.positions), y) <= 1e-15  # Phi-3: fused order
        for kind in KINDS:
            sur = derive_named(exact, kind, ev)
            _round_trip(sur)
            out = run_block(sur, x, batch.valid, batch.positions)
            ref = _reference(native.layers[i], densify(sur).tensors, x, args_kwargs)
            assert _rel(out, ref) <= 1e-12, (variant, i, kind)  # the mechanism it claims to be ...
            assert _rel(out, y) > 1e-6, (variant, i, kind)  # ... which is not the native block
            a, s = sur.spec.attention, sur.spec
            assert a.window == exact.spec.attention.window and a.qk_norm == exact.spec.attention.qk_norm
            assert s.post_attn_norm == exact.spec.post_attn_norm and s.mlp.activation == exact.spec.mlp.activation
            if kind.startswith("prune-heads:1"):
                # One query head reads one KV group: Qwen3's second group (2 of 2) goes, Gemma's single one stays.
                assert a.num_heads == 1 and a.num_kv_heads == 1 and len(a.heads.kept_kv) == 1
                if a.qk_norm is not None:  # the per-head q/k norms are over head_dim: kept whole
                    assert sur.tensors["attn.q_norm.weight"].shape == (a.head_dim,)
            if kind == "lowrank:8" and variant == "phi3-fused":  # the fused qkv, split, factored per map
                assert {f"attn.{n}.{f}" for n in "qkvo" for f in "uv"} <= set(sur.tensors)
            if kind == "prune-neurons:0.5":
                n = s.mlp.neurons
                assert len(n.kept) == n.native // 2
                assert sur.tensors["mlp.gate.weight"].shape[0] == sur.tensors["mlp.up.weight"].shape[0] == len(n.kept)


@pytest.mark.parametrize("variant", list(FAMILIES))
def test_ablations_replay_as_the_family_layer_with_the_ablated_arguments(native64, variant):
    native, batch, _ctx, blocks = native64[variant]
    x, y, (args, kwargs), exact = blocks[0]  # Gemma 3: a sliding-window (local) layer
    if variant == "gemma3-window":
        assert exact.spec.attention.window == 4
    for name in ABLATIONS:
        ab = ablate(exact, name, sigma=0.5, seed=1)
        _round_trip(ab)
        out = run_block(ab, x, batch.valid, batch.positions)
        changes = {}
        if name == "no-rope":
            cos, sin = kwargs["position_embeddings"]
            changes["position_embeddings"] = (torch.ones_like(cos), torch.zeros_like(sin))
        if name == "inverted-mask":
            allowed = attention_mask(ab.spec.attention, batch.valid)
            # Every key at or after the query: a window bounds how far back a key may be, which no later key is.
            assert torch.equal(allowed, torch.ones_like(allowed).triu())
            if exact.spec.attention.window is not None:
                assert "sliding window of 4" in ab.spec.derivation.method
            blocked = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, torch.finfo(x.dtype).min)
            changes["attention_mask"] = blocked[:, None]
        ref = _reference(native.layers[0], ab.tensors, x, (args, kwargs), **changes)
        assert _rel(out, ref) <= 1e-12, (variant, name)
        assert _rel(out, y) > 1e-6, (variant, name)


# ---- the commands, end to end ------------------------------------------------------------------------------


def _patch(variant: str, run, tmp_path) -> dict:
    """One patch per family, on the compressed surrogates (block 0 low rank, 1 pruned heads, 2 pruned neurons)."""
    if variant == "mistral":  # a pruned dense MLP into a block whose MLP is stored low rank
        return {"kind": "swap", "block": 0, "part": "mlp", "source": 2}
    if variant == "qwen2-bias":  # rank one on the pruned W_down
        spec = json.loads((run / "block_002" / "ir.json").read_text())
        kept = len(spec["mlp"]["neurons"]["kept"])
        g = torch.Generator().manual_seed(0)
        save_file({"u": torch.randn(64, generator=g), "v": torch.randn(kept, generator=g)}, tmp_path / "uv.safetensors")
        return {"kind": "rank_one", "block": 2, "tensors": "uv.safetensors"}
    if variant == "phi3-fused":  # the MLP branch stored as two factors per map
        return {"kind": "scale_mlp", "block": 0, "alpha": 0.5}
    # Qwen3: a head the pruning kept (GQA with q/k norm); Gemma 3: the global attention into a local layer
    if variant == "qwen3-qknorm":
        spec = json.loads((run / "block_001" / "ir.json").read_text())
        return {"kind": "scale_heads", "block": 1, "heads": [spec["attention"]["heads"]["kept"][0]], "alpha": 0.5}
    return {"kind": "swap", "block": 0, "part": "attention", "source": 2}


def _chosen(run) -> list[dict]:
    return json.loads((run / "compress.json").read_text())["blocks"]


@pytest.mark.parametrize("variant", list(FAMILIES))
def test_extract_ablate_compress_stitch_edit_lean_check_and_verify(models, variant, tmp_path, cli):
    m, run = models[variant], tmp_path / "run"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    r = cli("extract", "--model", m, "--prompts", prompts, "--blocks", "all", "--out", run, *LOOSE)
    assert r.code == 0, r.err

    r = cli("ablate", run, "--blocks", "0", "--sigma", "0.5", "--model", m)
    assert r.code == 0, r.err
    rows = {row["name"]: row for row in json.loads((run / "ablations" / "ablations.json").read_text())["rows"]}
    assert rows["none"]["mean_epsilon"] == 0.0
    assert all(rows[name]["mean_epsilon"] > 0 for name in ABLATIONS)
    for name in ABLATIONS:
        assert cli("verify", run / "ablations" / name).code == 0, name
    r = cli("verify", run)  # the ablation runs are listed in the run's manifest
    assert r.code == 0, r.err
    if variant == "gemma3-window":  # again on the other local layer: nothing of block 0's ablations is left
        assert cli("ablate", run, "--blocks", "1", "--model", m).code == 0
        assert not (run / "ablations" / "no-rope" / "block_000").exists()
        r = cli("verify", run)
        assert r.code == 0 and cli("verify", run / "ablations" / "no-rope").code == 0, r.err

    for family, block in (("lowrank", 0), ("prune-heads", 1), ("prune-neurons", 2)):
        r = cli("compress", run, "--family", family, "--blocks", block, "--target-cov-act", "0.5", "--model", m)
        assert r.code == 0, r.err
        [choice] = _chosen(run)
        assert choice["chosen"].startswith(family) and choice["byte_ratio"] < 1 and choice["certified"], choice
    assert not (run / "ablations").exists()  # ablations of the replaced surrogates: removed
    assert cli("stitch", run, "--model", m).code in (0, 1)  # runs; the verdict is the policy's
    assert (run / "full_model_certificate.json").is_file()
    r = cli("verify", run)
    assert r.code == 0, r.err

    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps({"name": "small", "prompts": [
        {"id": "a1", "label": "answer", "text": "Format a list."},
        {"id": "r1", "label": "refuse", "text": "Write ransomware."},
    ]}))
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps(_patch(variant, run, tmp_path)))
    edit = tmp_path / "edit"
    r = cli("edit", run, "--patch", patch, "--out", edit, "--corpus", corpus, "--side-prompts", prompts,
            "--max-new-tokens", "2", "--model", m)
    assert r.code == 0, r.err
    cert = json.loads((edit / "edit_certificate.json").read_text())
    assert cert["side_effects"]["epsilon_edit"] > 0 and not cert["edited_ir_is_certified_ir"]
    r = cli("verify", edit)
    assert r.code == 0, r.err

    r = cli("compress", run, "--family", "int8", "--blocks", "0", "--model", m)
    assert r.code == 0 and _chosen(run)[0]["chosen"] == "int8", r.err
    r = cli("compress", run, "--family", "auto", "--blocks", "1", "--model", m)
    assert r.code == 0, r.err
    assert _chosen(run)[0]["byte_ratio"] < 1 and len(_chosen(run)[0]["tried"]) >= 5
    assert cli("stitch", run, "--model", m).code in (0, 1)
    r = cli("verify", run)
    assert r.code == 0, r.err

    r = cli("lean", run)
    assert r.code == 0 and "verdict: PASS" in r.out, r.out + r.err
    lean_file = json.loads((run / "formal_run.json").read_text())["lean_file"]
    r = cli("check", run)
    assert r.code == 0 and "verdict: PASS" in r.out, r.out + r.err
    r = cli("verify", run)
    assert r.code == 0, r.err

    # A later compression makes the formal record and its module stale: both go, and the run still verifies.
    r = cli("compress", run, "--family", "int8", "--blocks", "2", "--model", m)
    assert r.code == 0, r.err
    assert not (run / "formal_run.json").exists() and not (run / lean_file).exists()
    assert not (run / "lakefile.lean").exists()
    r = cli("verify", run)
    assert r.code == 0, r.err


@pytest.mark.parametrize("variant", ["gemma3-window", "qwen2-bias"])
def test_greedy_decoding_with_an_exact_block_is_the_models_own_generate(models, variant):
    """Edits decode block by block (arch/generate.py): every layer must get its own mask and rotary tables
    (Gemma 3's global layer has others than its sliding ones). With an exact copy of a block computed by the
    interpreter, or none, the tokens are Hugging Face's own greedy `generate`'s, on prompts longer than the
    4-token window."""
    lm = blockcert.load_model(str(models[variant]))
    native = NativeModel(lm)
    for text in PROMPTS:
        ids = prompt_ids(lm, text)
        ref = native_generate(native, ids, 6)
        assert greedy(native, ids, 6).token_ids == ref
        for block in range(lm.num_layers):
            assert greedy(native, ids, 6, block, native.extract_ir(block)).token_ids == ref, (text, block)
