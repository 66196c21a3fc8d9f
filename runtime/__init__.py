"""pat-runtime: physics-aware training of physical neural networks.

Synchronous entry points for notebooks and scripts (:mod:`pat_runtime.api`)::

    import pat_runtime
    result = pat_runtime.train(device="sim:plate", task="digits", method="pat", epochs=5)
"""
from __future__ import annotations

from typing import Any

_API = ("train", "twin", "run_sync")


def __getattr__(name: str) -> Any:   # lazy: `import pat_runtime.wire` must not import torch
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_API)
