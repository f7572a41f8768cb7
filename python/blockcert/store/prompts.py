"""Prompt sets: the bundled ones and user files (plain text, one prompt a line, or JSONL)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from blockcert.core.batch import Batch
from blockcert.core.digest import canonical_json, sha256_bytes
from blockcert.errors import BlockCertError
from blockcert.records.certificate import PromptInfo
from blockcert.store.files import json_bytes
from blockcert.store.strict_json import read_regular

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
    if path.is_dir():
        raise BlockCertError(f"prompt set {spec!r} is a directory; give a prompt file (a prompt a line, or .jsonl)")
    if not path.is_file():
        raise BlockCertError(
            f"prompt set {spec!r} is neither a bundled set ({', '.join(BUNDLED)}) nor an existing file"
        )
    try:
        text = read_regular(path, "prompt file").decode("utf-8")
    except UnicodeDecodeError as e:
        raise BlockCertError(f"prompt file {path} is not valid UTF-8 (byte {e.start}); re-encode it as UTF-8") from None
    # A byte-order mark is encoding, not text: it would become part of the first prompt (or break its JSON).
    text = text.removeprefix("\ufeff")
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


def prompt_set(prompts: list[str], name: str = "inline") -> PromptSet:
    """Prompts given as a list of strings (the Python API); each must be a non-empty string."""
    if not prompts:
        raise BlockCertError("prompts: the list is empty; give at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise BlockCertError(f"prompts[{i}] is not a non-empty string")
    return PromptSet(name=name, description=f"{len(prompts)} prompts given in Python", prompts=tuple(prompts))


def prompt_info(ps: PromptSet, batch: Batch) -> PromptInfo:
    ids = [row[m].tolist() for row, m in zip(batch.ids, batch.valid, strict=True)]
    return PromptInfo(
        name=ps.name, description=ps.description, sha256=ps.sha256,
        token_ids_sha256=sha256_bytes(canonical_json(ids).encode()),
        n_prompts=len(ps.prompts), n_tokens=int(batch.valid.sum()),
    )


def prompts_file_bytes(ps: PromptSet, batch: Batch) -> bytes:
    """RUN_DIR/prompts.json: the texts and the exact token ids every block was traced on."""
    ids = [row[m].tolist() for row, m in zip(batch.ids, batch.valid, strict=True)]
    return json_bytes({"name": ps.name, "description": ps.description, "prompts": list(ps.prompts), "token_ids": ids})
