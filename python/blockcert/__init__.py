"""BlockCert: certified blockwise extraction of transformer mechanisms.

The public API lives in `blockcert.api` and is re-exported here; it is imported on first use, so that
`import blockcert.core.interpreter` (the replay of a stored surrogate) never pulls in transformers.
"""

import importlib

from blockcert.version import API_NAMES, INTERPRETER_VERSION, __version__

__all__ = ["INTERPRETER_VERSION", "__version__", *API_NAMES]


def __getattr__(name: str):
    if name in __all__ or name == "api":
        # Deferred (the API imports torch and transformers), and by module path: `from blockcert import api`
        # would ask this very function for `api` again while importing it.
        api = importlib.import_module("blockcert.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'blockcert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
