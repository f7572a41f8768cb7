"""`--trace-dtype`: traces stored compactly, ε measured on exactly the stored values, the rounding recorded."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load, load_file

import blockcert
from blockcert.core.replay import replay
from blockcert.records.certificate import BlockCertificate
from blockcert.store.run_reader import block_certificate, load_certified_ir, load_certified_traces, load_run_summary
from blockcert.store.tensors import read_header
from blockcert.verifier.run import verify_run
from tests._forge import reseal


@pytest.fixture(scope="module")
def toy(toy_models):
    return blockcert.load_model(str(toy_models["llama-gqa"]))


@pytest.fixture(scope="module")
def bf16_run(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("trace-dtype") / "bf16"
    blockcert.extract(toy, "stress", blocks="all", out=out, trace_dtype="bfloat16")
    return out


def _certs(run_dir) -> dict[int, BlockCertificate]:
    summary = load_run_summary(run_dir)
    return {e.index: block_certificate(run_dir, summary, e.index) for e in summary.blocks}


def _header_dtypes(run_dir, i: int) -> dict[str, str]:
    data = (run_dir / f"block_{i:03d}" / "traces.safetensors").read_bytes()
    return {k: v[0] for k, v in read_header(data, "traces").items()}


def test_bf16_traces_give_a_certificate_the_verifier_accepts(bf16_run, toy_models):
    rep = verify_run(bf16_run)
    assert rep.ok, rep.lines()
    for i, cert in _certs(bf16_run).items():
        assert cert.trace_dtype == "bfloat16" and cert.model.dtype == "float32"
        assert _header_dtypes(bf16_run, i)["x_in"] == _header_dtypes(bf16_run, i)["x_out"] == "BF16"
        # ε is a statement about the stored files: the replay of the stored IR on the stored x_in, against
        # the stored x_out, gives exactly the certified ε.
        ir = load_certified_ir(bf16_run, cert)
        trace, _ = load_certified_traces(bf16_run, cert, ir.spec)
        assert trace.x_in.dtype == torch.float32  # widened, exactly, for replay
        assert float(replay(ir, trace).errors[trace.valid].max()) == cert.metrics.epsilon
    # Re-running the model re-derives the traces: they differ from the stored ones by the recorded rounding.
    rep = verify_run(bf16_run, model=str(toy_models["llama-gqa"]))
    assert rep.ok, rep.lines()


def test_recorded_rounding_is_positive_for_bf16_and_exactly_zero_for_float32(bf16_run, toy, tmp_path):
    for cert in _certs(bf16_run).values():
        assert cert.trace_rounding.x_in > 0 and cert.trace_rounding.x_out > 0
    run = blockcert.extract(toy, "stress", blocks="all", out=tmp_path / "f32", trace_dtype="float32")
    default = blockcert.extract(toy, "stress", blocks="all")
    for i, cert in run.certificates.items():
        assert cert.trace_dtype == "float32"
        assert cert.trace_rounding.x_in == 0.0 and cert.trace_rounding.x_out == 0.0
        assert cert.metrics == default.certificates[i].metrics  # the same traces, the same numbers
        assert run.files[f"block_{i:03d}/traces.safetensors"] == default.files[f"block_{i:03d}/traces.safetensors"]
    assert verify_run(tmp_path / "f32").ok


def test_the_recorded_rounding_is_the_distance_to_the_models_traces(bf16_run, toy):
    native = blockcert.extract(toy, "stress", blocks="all")  # float32 traces: the model's own
    for i, cert in _certs(bf16_run).items():
        stored = load_file(bf16_run / f"block_{i:03d}" / "traces.safetensors")
        exact = load(native.files[f"block_{i:03d}/traces.safetensors"])
        valid = exact["valid"]
        for name in ("x_in", "x_out"):
            d = (stored[name].double() - exact[name].double()).norm(dim=-1)[valid].max()
            assert abs(float(d) - getattr(cert.trace_rounding, name)) <= 1e-12 * max(1.0, float(d))


def test_default_certificates_record_no_trace_dtype_and_old_ones_still_load(toy):
    run = blockcert.extract(toy, "default", blocks=[0])
    raw = json.loads(run.files["block_000/certificate.json"])
    assert "trace_dtype" not in raw and "trace_rounding" not in raw  # the bytes of before the option
    cert = BlockCertificate.model_validate(raw)
    assert cert.trace_dtype is None and cert.stored_trace_dtype == "float32"
    with pytest.raises(ValueError, match="recorded together"):
        BlockCertificate.model_validate({**raw, "trace_dtype": "bfloat16"})


def _one_block_errors(run_dir, i: int) -> list[str]:
    rep = verify_run(run_dir)
    assert not rep.ok
    return next(b.errors for b in rep.blocks if b.index == i)


def test_a_declared_trace_dtype_that_is_not_the_stored_one_fails_in_one_line(bf16_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bf16_run, run)
    # A forger re-declares the bf16 traces as float32 (rounding 0) and re-seals everything.
    reseal(run, 1, lambda d: d.update(trace_dtype="float32", trace_rounding={"x_in": 0.0, "x_out": 0.0}))
    errors = _one_block_errors(run, 1)
    assert errors == ["block 1: traces.safetensors stores x_in as BF16, but the certificate declares trace dtype "
                      "float32 (F32): the traces are not the ones certified"]
    # Dropping the declaration altogether (the model's dtype is then expected) fails the same way.
    shutil.rmtree(run)
    shutil.copytree(bf16_run, run)
    reseal(run, 0, lambda d: (d.pop("trace_dtype"), d.pop("trace_rounding")))
    assert len(errors := _one_block_errors(run, 0)) == 1 and "declares trace dtype float32" in errors[0]


def test_a_nonzero_rounding_for_the_models_own_dtype_is_refused(tmp_path, toy):
    blockcert.extract(toy, "default", blocks=[0], out=tmp_path / "r", trace_dtype="float32")
    reseal(tmp_path / "r", 0, lambda d: d.update(trace_rounding={"x_in": 0.5, "x_out": 0.0}))
    assert any("trace_rounding is nonzero" in e for e in _one_block_errors(tmp_path / "r", 0))


def test_float16_traces_and_float32_traces_of_a_float64_model(toy_models, toy, tmp_path):
    blockcert.extract(toy, "stress", blocks=[0], out=tmp_path / "f16", trace_dtype="float16")
    cert = _certs(tmp_path / "f16")[0]
    assert cert.trace_dtype == "float16" and cert.trace_rounding.x_out > 0
    assert _header_dtypes(tmp_path / "f16", 0)["x_in"] == "F16"
    assert verify_run(tmp_path / "f16").ok
    m64 = blockcert.load_model(str(toy_models["llama-gqa"]), dtype="float64")
    blockcert.extract(m64, "stress", blocks=[1], out=tmp_path / "f64", trace_dtype="float32")
    cert = _certs(tmp_path / "f64")[1]
    assert cert.model.dtype == "float64" and cert.trace_rounding.x_in > 0
    assert _header_dtypes(tmp_path / "f64", 1)["x_out"] == "F32"
    assert verify_run(tmp_path / "f64", model=str(toy_models["llama-gqa"])).ok


def test_cli_trace_dtype(cli, toy_models, tmp_path):
    bad = cli("extract", "--model", toy_models["llama-gqa"], "--blocks", "0", "--out", tmp_path / "bad",
              "--trace-dtype", "bf16")
    assert bad.code != 0 and "--trace-dtype 'bf16' is not known; use one of bfloat16, float16, float32" in bad.err
    assert not (tmp_path / "bad").exists()
    ok = cli("extract", "--model", toy_models["llama-gqa"], "--blocks", "0", "--out", tmp_path / "ok",
             "--trace-dtype", "bfloat16")
    assert ok.code == 0, ok.err
    assert _certs(tmp_path / "ok")[0].trace_dtype == "bfloat16"
    assert cli("verify", tmp_path / "ok").code == 0


def test_kinds_ranked_on_the_traces_refuse_compact_traces(cli, toy_models, tmp_path, bf16_run):
    r = cli("extract", "--model", toy_models["llama-gqa"], "--blocks", "0", "--out", tmp_path / "p",
            "--surrogate", "prune-heads:1", "--trace-dtype", "bfloat16")
    assert r.code != 0 and "drop --trace-dtype" in r.err and not (tmp_path / "p").exists()
    run = tmp_path / "run"
    shutil.copytree(bf16_run, run)
    c = cli("compress", run, "--family", "prune-heads", "--model", toy_models["llama-gqa"])
    assert c.code != 0 and "re-extract without --trace-dtype" in c.err
