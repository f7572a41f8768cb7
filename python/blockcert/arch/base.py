"""The architecture adapter: the one place that knows a Hugging Face family's module names and quirks.

An adapter turns a family's native decoder layer into BlockCert's declared IR (`core.ir.BlockSpec` plus
named tensors) and tells the native driver (`native.py`) where the layers, the final norm and the
attention modules live. A family registers itself with `@register`; loading, extraction and the native
driver look it up by the config's `model_type`, never through an `if family == ...` chain. A family that
is Llama with a difference subclasses `LlamaAdapter` and states only that difference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from blockcert.core.ir import BlockIR, MlpSpec
from blockcert.errors import BlockCertError


class ArchAdapter(ABC):
    model_type: ClassVar[str]  # the config's `model_type`
    family: ClassVar[str]  # the IR family written into ir.json
    architecture: ClassVar[str]  # the *ForCausalLM class name
    label: ClassVar[str]  # what the "supported:" line of an error shows

    def check_config(self, config, what: str) -> None:
        """Refuse a configuration whose numerics the IR cannot declare (one line, at load time).

        The default accepts every configuration of the family; a family with unsupported options overrides it.
        """
        return None

    @abstractmethod
    def layers(self, model: torch.nn.Module) -> torch.nn.ModuleList: ...

    @abstractmethod
    def final_norm(self, model: torch.nn.Module) -> torch.nn.Module: ...

    @abstractmethod
    def attention(self, layer: torch.nn.Module) -> torch.nn.Module: ...

    def mask_from_args(self, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """The attention mask the model handed its first block (None: the model passed no mask)."""
        return kwargs.get("attention_mask")

    @abstractmethod
    def extract_ir(self, native, index: int) -> BlockIR:
        """Exact-copy surrogate of block `index` of `native` (a `native.NativeModel`): the same weights and
        constants, written as data."""


ADAPTERS: dict[str, ArchAdapter] = {}


def register(cls: type[ArchAdapter]) -> type[ArchAdapter]:
    ADAPTERS[cls.model_type] = cls()
    return cls


def supported_labels() -> str:
    return "; ".join(a.label for a in ADAPTERS.values())


def adapter_for(config, what: str) -> ArchAdapter:
    mt = getattr(config, "model_type", None)
    adapter = ADAPTERS.get(mt)
    if adapter is None:
        arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise BlockCertError(
            f"unsupported architecture {arch} (model_type {mt!r}) in {what}; supported: {supported_labels()}"
        )
    adapter.check_config(config, what)
    return adapter


def activation_name(config) -> str:
    """The config's MLP activation under the name the IR uses (`MlpSpec.activation`)."""
    name = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None)
    name = {"swish": "silu", "gelu_python": "gelu"}.get(name, name)
    if name not in MlpSpec.model_fields["activation"].annotation.__args__:
        raise BlockCertError(f"activation {name!r} is not supported by the BlockCert interpreter")
    return name


def copy_tensor(x: torch.Tensor) -> torch.Tensor:
    """A model tensor for an IR. A whole contiguous tensor (a parameter) is shared, not copied: nothing
    writes an IR's tensors or a loaded model's weights in place, and an exact-copy IR would otherwise hold
    a second copy of its block's weights. A view (a slice of a fused weight, a transpose) is copied out, so
    no two IR tensors share storage."""
    x = x.detach()
    whole = x.storage_offset() == 0 and x.untyped_storage().nbytes() == x.numel() * x.element_size()
    return x if whole and x.is_contiguous() else x.clone().contiguous()
