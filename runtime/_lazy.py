"""PEP 562 lazy re-exports for package ``__init__`` files: ``import pat_runtime.edge`` stays cheap (no torch,
no broker client) until a name that needs them is used.

    __getattr__, __dir__ = lazy_exports(__name__, {"NodeService": ".service", "Deployment": ".deployed"})

Static type checkers and IDEs see the same names through an ``if TYPE_CHECKING:`` import block next to it.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``name -> relative module`` of ``package``; returns the module's ``__getattr__`` and ``__dir__``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)   # once: later lookups are plain attributes
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
