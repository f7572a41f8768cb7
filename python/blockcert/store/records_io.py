"""Typed records on disk: read a JSON file into its schema (one error line on any mismatch), write one atomically.

Reading is strict twice over: the bytes must be strict JSON (store/strict_json.py: no duplicate keys, no
NaN/Infinity, bounded depth and size), and the schema is validated in pydantic's strict mode, so a string
where an integer belongs (`"index": "0"`) is refused instead of coerced: what is certified is what is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from blockcert.errors import BlockCertError
from blockcert.store.files import atomic_write_json
from blockcert.store.strict_json import StrictJsonError, parse_strict, read_regular

M = TypeVar("M", bound=BaseModel)


def parse_model(data: bytes, cls: type[M], what: str) -> M:
    """A record from bytes already read (and, for a certified reader, already hashed)."""
    try:
        parse_strict(data)
    except StrictJsonError as e:
        raise BlockCertError(f"{what} is not strict JSON: {e}") from None
    try:
        return cls.model_validate_json(data, strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "top level"
        raise BlockCertError(f"{what} does not match its schema: field {loc}: {first['msg']}") from None


def load_model_file(path: Path, cls: type[M], what: str) -> M:
    return parse_model(read_regular(path, what), cls, f"{what} {path}")


def write_model_file(path: Path, obj: BaseModel) -> None:
    atomic_write_json(path, obj.model_dump(mode="json"))
