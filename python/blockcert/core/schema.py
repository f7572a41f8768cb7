"""The base classes of every recorded schema: frozen data, and frozen data sealed by its own digest."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict

from blockcert.core.digest import canonical_json, sha256_bytes


class Frozen(BaseModel):
    """Immutable, and strict about its fields: a file with an unknown key is refused, not half-read."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Sealed(Frozen):
    """A record whose `digest` is the SHA-256 of its canonical JSON without the digest itself.

    Subclasses declare `digest: str = ""` as their last field, so that the digest is written last.
    """

    def body_digest(self) -> str:
        return sha256_bytes(canonical_json(self.model_dump(mode="json", exclude={"digest"})).encode("utf-8"))

    def sealed(self) -> Self:
        return self.model_copy(update={"digest": self.body_digest()})
