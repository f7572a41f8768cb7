"""The records every BlockCert file holds: typed, frozen, versioned pydantic models."""

from blockcert.core.schema import Frozen, Sealed

__all__ = ["Frozen", "Sealed"]
