"""Fuzzing the loaders (Hypothesis): 10,000 generated cases in all, in memory, a few seconds.

Every loader gets the bytes of a genuine sealed file with random byte edits, insertions and truncations.
Each case must end in exactly one of two ways: a `BlockCertError` (the one-line error), or a parsed record
that is *equal* to the original (the edit touched only insignificant bytes). Any other exception is a
traceback a user would see; a parsed record that differs from the original while its seal still holds is an
accepted forgery. Both fail the test.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockcert.errors import BlockCertError
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary, entry_of
from blockcert.store.files import json_bytes
from blockcert.store.formal_json import parse_formal
from blockcert.store.manifest import parse_manifest
from blockcert.store.records_io import parse_model
from blockcert.store.strict_json import parse_strict
from blockcert.store.tensors import check_layout, read_header

TINY = Path(__file__).resolve().parents[1] / "artifacts" / "tiny" / "run"
CERT = (TINY / "block_000" / "certificate.json").read_bytes()
IR = (TINY / "block_000" / "ir.safetensors").read_bytes()
FORMAL = (TINY / "formal_run.json").read_bytes()
_cert = BlockCertificate.model_validate_json(CERT)
SUMMARY_RECORD = RunSummary(
    model=_cert.model, prompts=_cert.prompts, thresholds=_cert.thresholds, policy=_cert.policy,
    blocks=(entry_of(_cert),), all_certified=_cert.certified,
).with_files({"block_000/certificate.json": "a" * 64, "prompts.json": "b" * 64})
SUMMARY = json_bytes(SUMMARY_RECORD.model_dump(mode="json"))

N = 2500  # per loader: four loaders, 10,000 cases
FUZZ = settings(max_examples=N, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` with 1–4 edits: a byte replaced, inserted or deleted, or the tail cut off."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "token"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "replace" and out:
            out[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and out:
            del out[pos]
        elif kind == "truncate":
            del out[pos:]
        else:  # a JSON-significant token that the strict reader must refuse or the seal must catch
            out[pos:pos] = draw(st.sampled_from([b"NaN", b"Infinity", b"1e309", b'"x": 1, ', b"[", b"9" * 30,
                                                 b'"certified": true, ', b'"0"', b"-0", b"\xef\xbb\xbf"]))
    return bytes(out)


@FUZZ
@given(mutated(SUMMARY))
def test_fuzz_manifest(data):
    try:
        got = parse_manifest(data, Path("run"))
    except BlockCertError:
        return
    assert got == SUMMARY_RECORD, "a changed sealed manifest was accepted"


@FUZZ
@given(mutated(CERT))
def test_fuzz_block_certificate(data):
    try:
        got = parse_model(data, BlockCertificate, "certificate")
    except BlockCertError:
        return
    if got.body_digest() == got.digest:  # what every reader demands before it trusts a certificate
        assert got == _cert, "a changed sealed certificate was accepted"


@FUZZ
@given(mutated(FORMAL))
def test_fuzz_formal_run(data):
    try:
        parse_formal(data.decode("utf-8", "replace"))
    except BlockCertError:
        return


_WANT = {k: (v[0], tuple(v[1])) for k, v in read_header(IR, "ir").items()}


@FUZZ
@given(mutated(IR[:4096]))
def test_fuzz_safetensors_header(head):
    data = head + IR[4096:]
    try:
        header = read_header(data, "ir.safetensors")
        check_layout(header, _WANT, "ir.safetensors")
    except BlockCertError:
        return
    assert header == _WANT


def test_strict_reader_refuses_what_json_accepts():
    for text in ('{"a": 1, "a": 2}', '{"a": NaN}', '{"a": -Infinity}', '{"a": 1e400}', "[" * 1000 + "]" * 1000):
        try:
            parse_strict(text)
        except BlockCertError:
            continue
        raise AssertionError(f"accepted {text[:30]!r}")
