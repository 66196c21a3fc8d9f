"""Twin base class, the registry of twin kinds, and save/load.

A twin is an ``nn.Module`` with ``forward(x[B, in], theta[P] or [B, P]) -> y[B, out]`` approximating the
device. ``config()`` returns the constructor keywords (besides ``spec``) so a saved twin can be rebuilt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pat_runtime.devices.spec import DeviceSpec

TWIN_FORMAT = "pat-twin/1"
_KINDS: dict[str, type["Twin"]] = {}


class Twin(nn.Module):
    """Base class: subclasses set ``kind`` and implement ``forward`` and ``config``."""

    kind: str = "twin"
    #: Adam learning rate that works for this family when fitting
    default_lr: float = 1e-3

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "kind" in cls.__dict__:
            _KINDS[cls.kind] = cls

    def __init__(self, spec: DeviceSpec):
        super().__init__()
        self.spec = spec
        lo, hi = spec.x_range
        tlo, thi = spec.theta_range
        self.register_buffer("x_mid", torch.tensor((lo + hi) / 2))
        self.register_buffer("x_half", torch.tensor((hi - lo) / 2))
        self.register_buffer("t_mid", torch.tensor((tlo + thi) / 2))
        self.register_buffer("t_half", torch.tensor((thi - tlo) / 2))

    def normalized_inputs(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``[x̂, θ̂]`` with both mapped from their safe ranges to [-1, 1]; θ broadcast to the batch."""
        th = theta.unsqueeze(0).expand(x.shape[0], -1) if theta.dim() == 1 else theta
        return torch.cat([(x - self.x_mid) / self.x_half, (th - self.t_mid) / self.t_half], dim=1)

    def config(self) -> dict[str, Any]:
        return {}

    def prepare(self, x: torch.Tensor, theta: torch.Tensor, y: torch.Tensor) -> None:
        """Data-dependent initialisation before fitting (e.g. output statistics). Default: nothing."""

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


def twin_kinds() -> list[str]:
    from . import greybox, mlp, residual  # noqa: F401  (register the kinds)

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
