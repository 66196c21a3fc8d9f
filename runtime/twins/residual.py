"""Residual twin: grey-box physics plus a small learned correction.

    y = greybox(x, θ) + σ_y ⊙ MLP([x̂, θ̂])        (last MLP layer starts at zero: y = greybox at init)
"""
from __future__ import annotations

from typing import Any

import torch

from devices.spec import DeviceSpec

from .base import Twin
from .greybox import GreyBoxTwin
from .mlp import mlp


class ResidualTwin(Twin):
    kind = "residual"
    default_lr = 2e-3

    def __init__(self, spec: DeviceSpec, sim_options: dict[str, Any] | None = None, hidden: int = 128,
                 depth: int = 2, physics_lr_scale: float = 10.0):
        super().__init__(spec)
        self.base = GreyBoxTwin(spec, sim_options)
        self.hidden, self.depth, self.physics_lr_scale = int(hidden), int(depth), float(physics_lr_scale)
        self.corr = mlp(spec.in_dim + spec.param_dim, spec.out_dim, self.hidden, self.depth, zero_last=True)
        self.register_buffer("y_std", torch.ones(spec.out_dim))

    def config(self):
        return {"sim_options": self.base.sim_options, "hidden": self.hidden, "depth": self.depth,
                "physics_lr_scale": self.physics_lr_scale}

    @torch.no_grad()
    def prepare(self, x, theta, y):
        self.y_std.copy_(y.std(0).clamp(min=1e-6))

    def param_groups(self, lr: float):
        return [{"params": list(self.base.parameters()), "lr": lr * self.physics_lr_scale},
                {"params": list(self.corr.parameters()), "lr": lr}]

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.base(x, theta) + self.y_std * self.corr(self.normalized_inputs(x, theta))
