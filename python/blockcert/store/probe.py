"""TODO-DOC"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from blockcert.errors import BlockCertError
from blockcert.records.semantic import Probe


def load_probe(path: Path | None = None) -> Probe:
    """The bundled probe, or a JSON file of the same shape."""
    if path is None:
        text = resources.files("blockcert").joinpath("data/semantic_probe.json").read_text("utf-8")
        where = "bundled semantic probe"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BlockCertError(f"probe file {path} does not exist") from None
        except UnicodeDecodeError:
            raise BlockCertError(f"probe file {path} is not valid UTF-8") from None
        where = f"probe file {path}"
    try:
        probe = Probe.model_validate(json.loads(text))
    except json.JSONDecodeError as e:
        raise BlockCertError(f"{where} is not valid JSON ({e})") from None
    except ValidationError as e:
        first = e.errors()[0]
        raise BlockCertError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if not probe.items:
        raise BlockCertError(f"{where} holds no items")
    if any(not i.prompt or not i.label.strip() for i in probe.items):
        raise BlockCertError(f"{where}: every item needs a non-empty prompt and label")
    return probe
