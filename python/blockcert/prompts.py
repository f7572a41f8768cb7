"""Prompt sets: the bundled ones and user files (plain text, one prompt a line, or JSONL)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .errors import BlockCertError
from .files import canonical_json, sha256_bytes

BUNDLED = ("default", "stress")


class PromptSet(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    prompts: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """Hash of the prompt texts alone, so a renamed copy of the same set hashes the same."""
        return sha256_bytes(canonical_json(list(self.prompts)).encode("utf-8"))


def bundled(name: str) -> PromptSet:
    data = json.loads(resources.files("blockcert").joinpath(f"data/prompts_{name}.json").read_text("utf-8"))
    return PromptSet(name=data["name"], description=data["description"], prompts=tuple(data["prompts"]))


def load_prompts(spec: str) -> PromptSet:
    """`default`, `stress` (bundled), a `.jsonl` file of {"text": ...} objects, or a UTF-8 text file."""
    if spec in BUNDLED:
        return bundled(spec)
    path = Path(spec)
    if not path.is_file():
        raise BlockCertError(
            f"prompt set {spec!r} is neither a bundled set ({', '.join(BUNDLED)}) nor an existing file"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise BlockCertError(f"prompt file {path} is not valid UTF-8 (byte {e.start}); re-encode it as UTF-8") from None
    if path.suffix == ".jsonl":
        prompts = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BlockCertError(f"prompt file {path} line {n}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise BlockCertError(f'prompt file {path} line {n}: expected an object {{"text": "..."}}')
            prompts.append(obj["text"])
    else:
        prompts = [line for line in text.splitlines() if line.strip()]
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise BlockCertError(f"prompt file {path} holds no prompts; put one prompt per line")
    return PromptSet(name=path.name, description=f"file {path.name}", prompts=tuple(prompts))
