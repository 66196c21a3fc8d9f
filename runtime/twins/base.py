"""Twin base class and the registry its subclasses enter by their ``kind`` (make/save/load: :mod:`.kinds`).

A twin is an ``nn.Module`` with ``forward(x[B, in], theta[P] or [B, P]) -> y[B, out]`` approximating the
device. ``config()`` returns the constructor keywords (besides ``spec``) so a saved twin can be rebuilt.
"""
from __future__ import annotations

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
