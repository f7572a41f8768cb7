"""The adapter layer: the only code that knows Hugging Face module names.

Importing the package registers every supported family (`ADAPTERS`).
"""

from blockcert.arch import families, gemma3, gpt2, llama  # noqa: F401  (registration)
from blockcert.arch.base import ADAPTERS, ArchAdapter, adapter_for, register, supported_labels

__all__ = ["ADAPTERS", "ArchAdapter", "adapter_for", "register", "supported_labels"]
