"""Tensor artifacts on disk: a block's IR (ir.json + ir.safetensors), its traces and its losses.

One decoder serves every reader: the certified reader (run_reader.py) passes the bytes it has just hashed,
so what is parsed is exactly what was checked. Safetensors only: no pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from safetensors.torch import save_file as st_save_file

from blockcert.core.ir import BlockIR, BlockSpec, tensor_layout
from blockcert.core.metrics import token_errors
from blockcert.core.traces import BlockTrace, LossTrace
from blockcert.errors import BlockCertError
from blockcert.store import layout
from blockcert.store.files import atomic_write_bytes, atomic_write_with, json_bytes, sha256_file
from blockcert.store.records_io import parse_model
from blockcert.store.strict_json import StrictJsonError, parse_strict

D = TypeVar("D", BlockTrace, LossTrace)


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def record_bytes(record: BlockTrace | LossTrace) -> bytes:
    return tensor_bytes({f.name: getattr(record, f.name) for f in fields(record)})


def ir_files(ir: BlockIR, tensors: bool = True) -> dict[str, bytes]:
    """The two files of an IR, by name inside its block directory (`tensors=False`: ir.json alone)."""
    files = {layout.IR_SPEC: json_bytes(ir.spec.model_dump(mode="json"))}
    if tensors:
        files[layout.IR_TENSORS] = tensor_bytes(ir.tensors)
    return files


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, tensor_bytes(tensors))


def write_tensors_file(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """`tensor_bytes(tensors)` written to `path` atomically, straight from the tensors' memory (no bytes
    object of the whole file: a block's IR is hundreds of MB); the file's SHA-256."""
    digest: list[str] = []

    def write(_f, tmp: Path) -> None:
        st_save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        digest.append(sha256_file(tmp))

    atomic_write_with(path, write)
    return digest[0]


MAX_HEADER_BYTES = 1 << 20  # a block's header lists ~20 tensors in < 2 KB
_ITEM = {"BOOL": 1, "U8": 1, "I8": 1, "F16": 2, "BF16": 2, "I16": 2, "F32": 4, "I32": 4, "F64": 8, "I64": 8}
DTYPE_TAG = {"float32": "F32", "float64": "F64", "bfloat16": "BF16", "float16": "F16"}
_TORCH_OF_TAG = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "F16": torch.float16,
                 "BF16": torch.bfloat16, "I16": torch.int16, "F32": torch.float32, "I32": torch.int32,
                 "F64": torch.float64, "I64": torch.int64}
TORCH_DTYPE = {name: _TORCH_OF_TAG[tag] for name, tag in DTYPE_TAG.items()}

# name -> (dtype tag, shape); a None dimension is free (only its rank is fixed).
Layout = dict[str, tuple[str, tuple[int | None, ...]]]


def read_header(data: bytes, what: str, total: int | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The safetensors header of `data`, validated by hand before the library parses anything: its length,
    strict JSON, every entry's dtype, shape and byte range, the ranges tiling the data exactly.

    With `total`, `data` is only the file's first bytes (at least the header) and `total` its length."""
    total = len(data) if total is None else total
    if total < 8 or len(data) < 8:
        raise BlockCertError(f"{what} is not a safetensors file (shorter than its 8-byte header length)")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES or n > total - 8 or n > len(data) - 8:
        raise BlockCertError(f"{what} is not a safetensors file (header length {n} is out of range)")
    try:
        header = parse_strict(data[8:8 + n])
    except StrictJsonError as e:
        raise BlockCertError(f"{what}: safetensors header is not strict JSON ({e})") from None
    if not isinstance(header, dict):
        raise BlockCertError(f"{what}: safetensors header is not an object")
    out, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}
        dtype, shape, offs = (entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")) if ok else (0, 0, 0)
        if not (ok and dtype in _ITEM and isinstance(shape, list) and len(shape) <= 8
                and all(type(d) is int and 0 <= d < 1 << 40 for d in shape)
                and isinstance(offs, list) and len(offs) == 2 and all(type(o) is int and o >= 0 for o in offs)):
            raise BlockCertError(f"{what}: tensor {name[:60]!r} has a malformed header entry")
        size = _ITEM[dtype]
        for d in shape:
            size *= d
        if offs[1] - offs[0] != size:
            raise BlockCertError(f"{what}: tensor {name[:60]!r} declares {offs[1] - offs[0]} bytes for shape {shape}")
        spans.append((offs[0], offs[1]))
        out[name] = (dtype, tuple(shape))
    pos = 0
    for lo, hi in sorted(spans):
        if lo != pos:
            raise BlockCertError(f"{what}: tensor data overlaps or leaves gaps (byte {lo}, expected {pos})")
        pos = hi
    if pos != total - 8 - n:
        raise BlockCertError(f"{what}: tensor data is {total - 8 - n} bytes, the header accounts for {pos}")
    return out


def check_layout(header: dict[str, tuple[str, tuple[int, ...]]], want: Layout, what: str,
                 optional: Layout | None = None) -> None:
    """Every tensor of `want` present with its dtype and shape, nothing else but those of `optional`."""
    optional = optional or {}
    for name in want:
        if name not in header:
            raise BlockCertError(f"{what} lacks tensor {name!r}")
    for name, (dtype, shape) in header.items():
        spec = want.get(name) or optional.get(name)
        if spec is None:
            raise BlockCertError(f"{what} holds tensor {name[:60]!r}, which its layout does not declare")
        wdtype, wshape = spec
        if dtype != wdtype:
            raise BlockCertError(f"{what}: tensor {name!r} has dtype {dtype}, expected {wdtype}")
        if len(shape) != len(wshape) or any(w is not None and w != d for d, w in zip(shape, wshape, strict=False)):
            raise BlockCertError(f"{what}: tensor {name!r} has shape {list(shape)}, expected "
                                 f"{[('*' if w is None else w) for w in wshape]}")


def ir_layout(spec: BlockSpec, dtype: str) -> tuple[Layout, Layout]:
    """The tensors an IR's spec implies (required, optional biases), in the model's dtype: every linear map
    in the form the spec declares (core.ir.tensor_layout: dense, low-rank factors, int8 + scales)."""
    return tensor_layout(spec, DTYPE_TAG[dtype])


def trace_layout(n_prompts: int, max_len: int, hidden: int, heads: int, dtype: str) -> Layout:
    """traces.safetensors' tensors; `dtype` is the stored trace dtype (the certificate's `stored_trace_dtype`)."""
    f, p, t = DTYPE_TAG[dtype], n_prompts, max_len
    return {"x_in": (f, (p, t, hidden)), "x_out": (f, (p, t, hidden)), "valid": ("BOOL", (p, t)),
            "positions": ("I64", (p, t)), "native_mask": ("BOOL", (p, t, t)), "native_argmax": ("I64", (p, heads, t))}


def trace_dtype_problem(data: bytes, declared: str, what: str) -> str | None:
    """One line when traces.safetensors stores x_in or x_out in another dtype than the one declared."""
    header = read_header(data, what)
    want = DTYPE_TAG[declared]
    for name in ("x_in", "x_out"):
        got = header.get(name, (want, ()))[0]
        if got != want:
            return (f"{what} stores {name} as {got}, but the certificate declares trace dtype {declared} ({want}): "
                    "the traces are not the ones certified")
    return None


def stored_trace(trace: BlockTrace, dtype: str) -> tuple[BlockTrace, torch.Tensor, torch.Tensor]:
    """The trace as stored with x_in and x_out in `dtype`, and the per-token rounding ‖round(x) − x‖₂ of each
    ([P, T] float64, exact). A dtype equal to the trace's own changes nothing and measures zeros."""
    stored = narrowed(trace, dtype)
    return stored, token_errors(stored.x_in, trace.x_in), token_errors(stored.x_out, trace.x_out)


def narrowed(trace: BlockTrace, dtype: str) -> BlockTrace:
    """x_in and x_out cast to `dtype` (the trace itself when they are in it already)."""
    target = TORCH_DTYPE[dtype]
    if trace.x_in.dtype == target and trace.x_out.dtype == target:
        return trace
    return replace(trace, x_in=trace.x_in.to(target), x_out=trace.x_out.to(target))


def widened(trace: BlockTrace, dtype: str) -> BlockTrace:
    """Stored traces in the model's dtype `dtype`, for replay (exact: every narrower float is representable)."""
    return narrowed(trace, dtype)


def loss_layout(n_prompts: int, max_len: int) -> Layout:
    s = (n_prompts, max(max_len - 1, 0))
    return {"base_nll": ("F64", s), "stitched_nll": ("F64", s), "loss_ok": ("BOOL", s)}


def decode_tensors(data: bytes, what: str, want: Layout | None = None, optional: Layout | None = None,
                   ) -> dict[str, torch.Tensor]:
    """Tensors from bytes; with `want`, the header is checked against that layout before anything is loaded."""
    header = read_header(data, what)
    if want is not None:
        check_layout(header, want, what, optional)
    try:
        return st_load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise BlockCertError(f"{what} is not a readable safetensors file ({str(e)[:200]})") from None


def read_tensors_file(path: Path, what: str, sha256: str) -> dict[str, torch.Tensor]:
    """A safetensors file read straight into tensors of its own (no bytes object of the whole file beside
    them: a block's IR is hundreds of MB), its header validated first, refused unless the file hashes to
    `sha256`. The same tensors as `decode_tensors` of the file's bytes."""
    h = hashlib.sha256()
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below; opened before the checks that use it)
    except OSError as e:
        raise BlockCertError(f"{what} {path} cannot be opened ({e.strerror or e})") from None
    with f:
        total = os.fstat(f.fileno()).st_size
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        head += f.read(min(n, MAX_HEADER_BYTES))
        header = read_header(head, what, total)
        h.update(head)
        offsets = json.loads(head[8:8 + n])
        out: dict[str, torch.Tensor] = {}
        for name in sorted(header, key=lambda k: offsets[k]["data_offsets"][0]):
            tag, shape = header[name]
            t = torch.empty(shape, dtype=_TORCH_OF_TAG[tag])
            if t.numel():
                buf = memoryview(t.reshape(-1).view(torch.uint8).numpy())
                got = 0
                while got < len(buf):
                    k = f.readinto(buf[got:])
                    if not k:
                        raise BlockCertError(f"{what} {path} ended early (truncated while being read)")
                    got += k
                h.update(buf)
            out[name] = t
        if f.read(1):
            raise BlockCertError(f"{what} {path} grew while being read")
    if h.hexdigest() != sha256:
        raise BlockCertError(f"{what} {path} changed since it was written (SHA-256 mismatch)")
    return {name: out[name] for name in header}


def decode_record(data: bytes, cls: type[D], what: str, want: Layout | None = None) -> D:
    d = decode_tensors(data, what, want)
    try:
        return cls(**{f.name: d[f.name] for f in fields(cls)})
    except KeyError as e:
        raise BlockCertError(f"{what} lacks tensor {e.args[0]!r}") from None


def decode_spec(data: bytes, what: str) -> BlockSpec:
    return parse_model(data, BlockSpec, what)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BlockCertError(f"missing file {path}") from None


def save_ir(ir: BlockIR, block_dir: Path) -> list[str]:
    files = ir_files(ir)
    for name, data in files.items():
        atomic_write_bytes(block_dir / name, data)
    return list(files)


def load_ir(block_dir: Path) -> BlockIR:
    """An IR from a block directory, unchecked (the certified reader is run_reader.load_certified_ir)."""
    spec = decode_spec(_read(block_dir / layout.IR_SPEC), str(block_dir / layout.IR_SPEC))
    path = block_dir / layout.IR_TENSORS
    return BlockIR(spec, decode_tensors(_read(path), str(path)))


def save_record(path: Path, record: BlockTrace | LossTrace) -> None:
    atomic_write_bytes(path, record_bytes(record))


def load_record(path: Path, cls: type[D]) -> D:
    return decode_record(_read(path), cls, str(path))
