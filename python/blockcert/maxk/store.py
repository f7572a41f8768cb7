"""All file I/O of the Max-of-K study: a study directory holds

    weights.safetensors      the trained float32 weights (W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    train_record.json        TrainRecord (sealed)
    proof_<method>.json      ProofCertificate (sealed), one per method
    lean/                    a tiny Lake package: lakefile.lean, lean-toolchain, MaxKCert.lean, MaxKCert/<Method>.lean

Every write is atomic; every read treats the file as hostile and fails with one BlockCertError line.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError

from blockcert.errors import BlockCertError
from blockcert.maxk.model import check_state
from blockcert.maxk.records import ProofCertificate, TrainRecord
from blockcert.store.files import atomic_write_bytes, atomic_write_json, sha256_file

WEIGHTS = "weights.safetensors"
RECORD = "train_record.json"
LEAN_DIR = "lean"
METHODS = ("brute", "cubic", "subcubic")
TOOLCHAIN = "leanprover/lean4:v4.35.0"


def proof_path(d: Path, method: str) -> Path:
    return d / f"proof_{method}.json"


def save_weights(d: Path, state: dict[str, torch.Tensor]) -> str:
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in sorted(state.items())})
    atomic_write_bytes(d / WEIGHTS, data)
    return sha256_file(d / WEIGHTS)


def load_weights(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    p = d / WEIGHTS
    try:
        state = load(p.read_bytes())
    except FileNotFoundError:
        raise BlockCertError(f"weights not found: {p} (run `blockcert maxk train --out {d}` first)") from None
    except Exception as e:  # safetensors raises its own error types on malformed headers
        raise BlockCertError(f"weights file {p} is not valid safetensors ({type(e).__name__}: {e})") from None
    try:
        check_state(state)
    except ValueError as e:
        raise BlockCertError(f"weights file {p}: {e}") from None
    return state


def _read_model(p: Path, cls, what: str):
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BlockCertError(f"{what} not found: {p}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BlockCertError(f"{what} {p} is not valid JSON ({e})") from None
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        raise BlockCertError(f"{what} {p} does not match its schema: {loc}: {err['msg']}") from None


def save_record(d: Path, rec: TrainRecord) -> None:
    atomic_write_json(d / RECORD, rec.model_dump(mode="json"))


def load_record(d: Path) -> TrainRecord:
    return _read_model(d / RECORD, TrainRecord, "training record")


def save_certificate(d: Path, cert: ProofCertificate) -> None:
    atomic_write_json(proof_path(d, cert.method), cert.model_dump(mode="json"))


def load_certificate(d: Path, method: str) -> ProofCertificate | None:
    p = proof_path(d, method)
    if not p.exists():
        return None
    return _read_model(p, ProofCertificate, f"{method} certificate")


def remove_certificate(d: Path, method: str) -> None:
    """Certificates are removed first and written last: an interrupted proof leaves none behind."""
    proof_path(d, method).unlink(missing_ok=True)


def file_sha256(p: Path) -> str:
    try:
        return sha256_file(p)
    except FileNotFoundError:
        raise BlockCertError(f"file not found: {p}") from None


def toolchain_text() -> str:
    """The repository's pinned toolchain (lean-toolchain at the checkout root), else the same pin."""
    for parent in Path(__file__).resolve().parents:
        p = parent / "lean-toolchain"
        if p.is_file() and (parent / "lakefile.lean").is_file():
            return p.read_text(encoding="utf-8")
    return TOOLCHAIN + "\n"


def lean_file(d: Path, method: str) -> Path:
    return d / LEAN_DIR / "MaxKCert" / f"{method.capitalize()}.lean"


def write_lean_package(d: Path, method: str, text: str) -> None:
    root = d / LEAN_DIR
    lakefile = ("import Lake\nopen Lake DSL\n\n-- Lean core only: nothing to download.\npackage maxkcert\n\n"
                "@[default_target]\nlean_lib MaxKCert where\n  globs := #[.andSubmodules `MaxKCert]\n")
    atomic_write_bytes(root / "lakefile.lean", lakefile.encode())
    atomic_write_bytes(root / "lean-toolchain", toolchain_text().encode())
    atomic_write_bytes(lean_file(d, method), text.encode("utf-8"))
    present = [m for m in METHODS if lean_file(d, m).exists()]
    top = "".join(f"import MaxKCert.{m.capitalize()}\n" for m in present)
    atomic_write_bytes(root / "MaxKCert.lean", top.encode())


def read_lean(d: Path, method: str) -> str | None:
    p = lean_file(d, method)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return ""
