"""Tensor artifacts on disk: a block's IR (ir.json + ir.safetensors), its traces and its losses.

One decoder serves every reader: the certified reader (run_reader.py) passes the bytes it has just hashed,
so what is parsed is exactly what was checked. Safetensors only: no pickle anywhere.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from blockcert.core.ir import BlockIR, BlockSpec
from blockcert.core.traces import BlockTrace, LossTrace
from blockcert.errors import BlockCertError
from blockcert.store import layout
from blockcert.store.files import atomic_write_bytes, json_bytes

D = TypeVar("D", BlockTrace, LossTrace)


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def record_bytes(record: BlockTrace | LossTrace) -> bytes:
    return tensor_bytes({f.name: getattr(record, f.name) for f in fields(record)})


def ir_files(ir: BlockIR) -> dict[str, bytes]:
    """The two files of an IR, by name inside its block directory."""
    return {layout.IR_SPEC: json_bytes(ir.spec.model_dump(mode="json")), layout.IR_TENSORS: tensor_bytes(ir.tensors)}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, tensor_bytes(tensors))


def decode_tensors(data: bytes, what: str) -> dict[str, torch.Tensor]:
    try:
        return st_load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise BlockCertError(f"{what} is not a readable safetensors file ({e})") from None


def decode_record(data: bytes, cls: type[D], what: str) -> D:
    d = decode_tensors(data, what)
    try:
        return cls(**{f.name: d[f.name] for f in fields(cls)})
    except KeyError as e:
        raise BlockCertError(f"{what} lacks tensor {e.args[0]!r}") from None


def decode_spec(data: bytes, what: str) -> BlockSpec:
    try:
        return BlockSpec.model_validate(json.loads(data))
    except (ValueError, UnicodeDecodeError) as e:
        raise BlockCertError(f"{what} is not a valid IR spec ({str(e).splitlines()[0]})") from None


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
