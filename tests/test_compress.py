"""compress, ablate and extract with the new kinds, end to end on the GQA toy (CLI and files)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from tests.conftest import error_lines


def _cert(run, i):
    return json.loads((run / f"block_{i:03d}" / "certificate.json").read_text())


def test_extract_records_size_and_the_ranking(cli, toy_models, tmp_path):
    out = tmp_path / "ph"
    r = cli("extract", "--model", toy_models["llama-gqa"], "--prompts", "stress", "--blocks", "0,1", "--out", out,
            "--surrogate", "prune-heads:2")
    assert r.code == 0, r.err
    c = _cert(out, 0)
    assert c["size"]["kind"] == "prune-heads:2" and c["size"]["byte_ratio"] < 1
    assert c["size"]["derivation"]["ranked_on"].startswith("certification prompts of this run")
    ir = load_file(out / "block_000" / "ir.safetensors")
    params = sum(t.numel() for k, t in ir.items() if not k.startswith("rope."))
    assert params == c["size"]["surrogate_parameters"]
    assert cli("verify", out).code == 0
    shown = cli("show", out).out
    assert "prune-heads:2" in shown and f"{c['size']['byte_ratio']:.3f}" in shown
    assert max(len(line) for line in shown.splitlines()) <= 80


@pytest.mark.parametrize("args, says", [
    (["--surrogate", "prune-heads:9"], "outside 1..4"), (["--surrogate", "lowrank:0"], "must be ≥ 1"),
    (["--surrogate", "prune-neurons:2"], "outside (0, 1]"), (["--surrogate", "what"], "unknown kind"),
])
def test_bad_surrogate_writes_nothing(cli, toy_models, tmp_path, args, says):
    out = tmp_path / "bad"
    r = cli("extract", "--model", toy_models["llama-gqa"], "--blocks", "0", "--out", out, *args)
    lines = error_lines(r.err)
    assert r.code != 0 and len(lines) == 1 and says in lines[0] and "--surrogate" in lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture
def loose_run(cli, toy_models, tmp_path):
    """The GQA toy under a policy its compressed blocks can meet (random toy weights: large residuals)."""
    out = tmp_path / "loose"
    r = cli("extract", "--model", toy_models["llama-gqa"], "--prompts", "stress", "--out", out,
            "--tau-act", "3", "--tau-loss", "0.5")
    assert r.code == 0, r.err
    return out


@pytest.mark.parametrize("family", ["lowrank", "prune-heads", "prune-neurons", "int8", "auto"])
def test_compress_then_stitch_bound_and_verify_unchanged(cli, loose_run, toy_models, family):
    model = toy_models["llama-gqa"]
    r = cli("compress", loose_run, "--family", family, "--target-cov-act", "0.9", "--model", model)
    assert r.code == 0, r.err
    report = json.loads((loose_run / "compress.json").read_text())
    smaller = 0
    for b in report["blocks"]:
        c = _cert(loose_run, b["block_index"])
        assert c["size"]["surrogate_bytes"] == b["bytes"]
        assert b["replays"] <= (100 if family == "auto" else 20) and b["suffix_recomputations"] <= b["replays"]
        if b["byte_ratio"] < 1:
            smaller += 1
            assert c["certified"] and c["metrics"]["act_covered"] >= 0.9 * c["metrics"]["n_tokens"]
            assert b["chosen"].split("+")[0].split(":")[0] in (family, "lowrank", "prune-neurons")
    assert smaller >= 1  # the family does compress something on this policy
    assert cli("verify", loose_run).code == 0
    assert cli("stitch", loose_run, "--model", model).code in (0, 1)  # runs; the verdict is the policy's
    assert cli("bound", loose_run, "--empirical-tokens", "0", "--no-plot").code in (0, 1)
    assert cli("verify", loose_run).code == 0


@pytest.mark.parametrize("kind", ["lowrank:4,mlp", "int8", "prune-neurons:0.5", "prune-heads:3"])
def test_verify_replays_every_family_and_catches_a_tampered_factor(cli, toy_models, tmp_path, kind):
    out = tmp_path / "run"
    r = cli("extract", "--model", toy_models["llama-gqa"], "--blocks", "0,2", "--out", out, "--surrogate", kind)
    assert r.code == 0, r.err
    assert cli("verify", out).code == 0
    path = out / "block_000" / "ir.safetensors"
    ts = load_file(path)
    name = next(k for k in sorted(ts) if k.endswith((".u", ".q8", "down.weight", "attn.o.weight")))
    ts[name] = ts[name] // 2 if ts[name].dtype.is_floating_point is False else ts[name] * 1.001
    save_file(ts, path)
    r = cli("verify", out)
    assert r.code == 1 and "block_000/ir.safetensors" in r.err


def test_ablate_inverted_mask_is_not_certified_and_noise_is_seeded(cli, run_copy, toy_models):
    r = cli("ablate", run_copy, "--blocks", "0,1", "--sigma", "0.5", "--seed", "1", "--model", toy_models["llama-gqa"])
    assert r.code == 0, r.err
    rows = {row["name"]: row for row in json.loads((run_copy / "ablations" / "ablations.json").read_text())["rows"]}
    assert rows["inverted-mask"]["certified_blocks"] == 0 and rows["inverted-mask"]["mean_cov_act"] < 0.5
    assert rows["noise-wq"]["mean_epsilon"] > 0
    for name in ("inverted-mask", "no-rope", "zero-wv", "noise-wq"):
        assert cli("verify", run_copy / "ablations" / name).code == 0  # replays exactly what was measured


@pytest.mark.parametrize("args, says", [
    (["compress", "--family", "svd"], "--family"), (["ablate", "--blocks", "5"], "5"),
    (["ablate", "--blocks", "0", "--sigma", "-1"], "--sigma"), (["compress", "--target-cov-act", "2"], "outside"),
])
def test_bad_compress_and_ablate_options(cli, run_copy, toy_models, args, says):
    before = sorted(p.name for p in run_copy.rglob("*"))
    r = cli(args[0], run_copy, *args[1:], "--model", toy_models["llama-gqa"])
    lines = error_lines(r.err)
    assert r.code != 0 and len(lines) == 1 and says in lines[0], r.err
    assert sorted(p.name for p in run_copy.rglob("*")) == before
