"""Models larger than memory: weights read lazily from safetensors shards, one decoder layer at a time.

`load_streaming(dir)` builds the Hugging Face model on the meta device, materialises what every step needs
(embeddings, final norm, head, rotary tables), and leaves the decoder layers empty. `StreamingWeights.layer(i)`
loads layer i from the memory-mapped shards for the duration of a `with` block and empties it afterwards;
nested uses are counted, so a layer-outer loop (arch/tracing.py) loads each layer once while the calls
inside it load nothing. Peak memory is then one layer's weights plus embeddings and head, whatever the
number of layers.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open

from blockcert.errors import BlockCertError


class ShardIndex:
    """Which shard file holds each tensor (model.safetensors.index.json, or one model.safetensors)."""

    def __init__(self, model_dir: Path):
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self.files = {name: model_dir / f for name, f in weight_map.items()}
        elif (model_dir / "model.safetensors").is_file():
            single = model_dir / "model.safetensors"
            with safe_open(single, framework="pt") as f:
                self.files = {name: single for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        else:
            raise BlockCertError(f"{model_dir} holds no safetensors weights (model.safetensors or an index)")

    def get(self, name: str) -> torch.Tensor:
        with safe_open(self.files[name], framework="pt") as f:
            return f.get_tensor(name)


class StreamingWeights:
    def __init__(self, model: torch.nn.Module, layers: torch.nn.ModuleList, prefix: str, shards: ShardIndex,
                 dtype: torch.dtype, device: torch.device):
        self.model, self.layers, self.prefix, self.shards = model, layers, prefix, shards
        self.dtype, self.device = dtype, device
        self._depth: dict[int, int] = {}
        self.loads = 0  # layer loads so far: the benchmark reports it beside the time

    def _names(self, i: int) -> list[str]:
        return [f"{self.prefix}.{i}.{n}" for n, _ in self.layers[i].named_parameters()]

    @contextmanager
    def layer(self, i: int):
        if self._depth.get(i, 0) == 0:
            tensors = {n.split(f"{self.prefix}.{i}.", 1)[1]: self.shards.get(n).to(self.device, self.dtype)
                       for n in self._names(i)}
            self.layers[i].load_state_dict(tensors, strict=False, assign=True)
            self.loads += 1
        self._depth[i] = self._depth.get(i, 0) + 1
        try:
            yield
        finally:
            self._depth[i] -= 1
            if self._depth[i] == 0:
                self.layers[i].to("meta")  # release: the next use reads the shard again


def streamed_weights_sha256(model: torch.nn.Module, shards: ShardIndex, aliases: dict[str, str]) -> str:
    """The same fingerprint as loading.weights_sha256 of the float32 model, one tensor in memory at a time."""
    h = hashlib.sha256()
    for name in sorted(model.state_dict(keep_vars=True)):
        source = name if name in shards.files else aliases.get(name, name)
        if source not in shards.files:
            raise BlockCertError(f"tensor {name} is in the model but in no shard")
        t = shards.get(source).to(torch.float32).contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()
