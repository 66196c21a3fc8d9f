"""Twins by kind: make one, and save/load any (``{"format": "pat-twin/1", "kind", "spec", "config", "state_dict"}``).

Importing this module registers the built-in kinds (their modules define the :class:`~.base.Twin` subclasses).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pat_runtime.devices.spec import DeviceSpec

from . import greybox, mlp, residual  # noqa: F401  (define, and so register, the built-in kinds)
from .base import _KINDS, TWIN_FORMAT, Twin


def twin_kinds() -> list[str]:
    """Every registered twin kind (the built-in ones: greybox, mlp, nominal, residual)."""
    return sorted(_KINDS)


def make_twin(kind: str, spec: DeviceSpec, **kwargs: Any) -> Twin:
    """``make_twin("mlp"|"greybox"|"residual"|"nominal", spec, **options)``."""
    kinds = twin_kinds()
    if kind not in _KINDS:
        raise ValueError(f"unknown twin kind {kind!r}; known: {', '.join(kinds)}")
    return _KINDS[kind](spec, **kwargs)


def twin_to_dict(twin: Twin) -> dict[str, Any]:
    return {"format": TWIN_FORMAT, "kind": twin.kind, "spec": twin.spec.to_dict(), "config": twin.config(),
            "state_dict": {k: v.detach().clone() for k, v in twin.state_dict().items()}}


def twin_from_dict(d: dict[str, Any]) -> Twin:
    if d.get("format") != TWIN_FORMAT:
        raise ValueError(f"not a twin file (format={d.get('format')!r}, expected {TWIN_FORMAT!r})")
    twin = make_twin(d["kind"], DeviceSpec.from_dict(d["spec"]), **d["config"])
    twin.load_state_dict(d["state_dict"])
    return twin


def save_twin(twin: Twin, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(twin_to_dict(twin), path)
    return path


def load_twin(path: str | Path) -> Twin:
    return twin_from_dict(torch.load(Path(path), map_location="cpu", weights_only=True))


__all__ = ["load_twin", "make_twin", "save_twin", "twin_from_dict", "twin_kinds", "twin_to_dict"]
