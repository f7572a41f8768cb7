"""Typed records on disk: read a JSON file into its schema (one error line on any mismatch), write one atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from blockcert.errors import BlockCertError
from blockcert.store.files import atomic_write_json, read_json

M = TypeVar("M", bound=BaseModel)


def load_model_file(path: Path, cls: type[M], what: str) -> M:
    data = read_json(path, what)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise BlockCertError(f"{what} {path} does not match its schema: {loc}: {first['msg']}") from None


def write_model_file(path: Path, obj: BaseModel) -> None:
    atomic_write_json(path, obj.model_dump(mode="json"))
