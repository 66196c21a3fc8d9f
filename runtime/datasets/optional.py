"""Lazy import of optional dataset packages with an install hint instead of a bare ImportError."""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingDatasetPackage(ImportError):
    """An optional package a task needs is not installed; the message names the pip package."""


def require(module: str, pip_name: str, task: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDatasetPackage` saying ``pip install pip_name``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDatasetPackage(
            f"task {task!r} needs the optional package {pip_name!r}: "
            f"pip install {pip_name}  (or all optional datasets: pip install 'pat-runtime[datasets]'; import of {module!r} failed: {exc})") from exc
