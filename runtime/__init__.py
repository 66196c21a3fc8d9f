"""pat-runtime: physics-aware training of physical neural networks.

Synchronous entry points for notebooks and scripts (:mod:`pat_runtime.api`)::

    import pat_runtime
    result = pat_runtime.train(device="sim:plate", task="digits", method="pat", epochs=5)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

# lazy (PEP 562): `import pat_runtime.wire` must not import torch
__getattr__, __dir__ = lazy_exports(__name__, {"train": ".api", "twin": ".api", "run_sync": ".api"})
__all__ = ["run_sync", "train", "twin"]

if TYPE_CHECKING:
    from .api import run_sync, train, twin
