"""Residual twin: a fitted grey-box (datasheet physics) plus a learned correction for what it lacks.

    y = greybox(x, θ) + σ_y ⊙ MLP([x̂, θ̂, (greybox(x, θ) - μ_y) / σ_y])

The last MLP layer starts at zero, so at init the twin *is* the grey box. Fitting is staged
(:func:`pat_runtime.twins.build_twin` / :func:`~pat_runtime.twins.best.fit_best_twin`): first the grey box is
calibrated, then (``freeze_physics=True``, default) only the correction is trained, on the residual that the
datasheet physics cannot explain (unmodelled second-order effects). The correction sees the grey-box output
as a feature, so it can learn output-side effects (crosstalk, saturation, detector nonlinearity) cheaply.
"""
from __future__ import annotations

from typing import Any

import torch

from pat_runtime.devices.spec import DeviceSpec

from .base import Twin
from .greybox import GreyBoxTwin
from .mlp import mlp


class ResidualTwin(Twin):
    kind = "residual"
    default_lr = 2e-3

    def __init__(self, spec: DeviceSpec, sim_options: dict[str, Any] | None = None, hidden: int = 256,
                 depth: int = 3, physics_lr_scale: float = 10.0, freeze_physics: bool = False):
        super().__init__(spec)
        self.base = GreyBoxTwin(spec, sim_options)
        self.hidden, self.depth, self.physics_lr_scale = int(hidden), int(depth), float(physics_lr_scale)
        self.corr = mlp(spec.in_dim + spec.param_dim + spec.out_dim, spec.out_dim, self.hidden, self.depth,
                        zero_last=True)
        self.register_buffer("y_mean", torch.zeros(spec.out_dim))
        self.register_buffer("y_std", torch.ones(spec.out_dim))
        self.freeze_physics = False
        self.set_freeze_physics(freeze_physics)

    def set_freeze_physics(self, frozen: bool) -> None:
        """Freeze (or release) the grey-box part: with it frozen only the correction is fitted."""
        self.freeze_physics = bool(frozen)
        self.base.requires_grad_(not frozen)
        if not frozen and not self.base.calibrate_output:
            self.base.gain.requires_grad_(False)
            self.base.offset.requires_grad_(False)

    def config(self):
        return {"sim_options": self.base.sim_options, "hidden": self.hidden, "depth": self.depth,
                "physics_lr_scale": self.physics_lr_scale, "freeze_physics": self.freeze_physics}

    @torch.no_grad()
    def prepare(self, x, theta, y):
        self.y_mean.copy_(y.mean(0))
        self.y_std.copy_(y.std(0).clamp(min=1e-6))

    def param_groups(self, lr: float):
        groups = [{"params": [p for p in self.corr.parameters() if p.requires_grad], "lr": lr}]
        phys = [p for p in self.base.parameters() if p.requires_grad]
        if phys:
            groups.append({"params": phys, "lr": lr * self.physics_lr_scale})
        return groups

    def cached_part(self, x: torch.Tensor, theta: torch.Tensor, chunk: int = 1024) -> torch.Tensor | None:
        """Grey-box outputs for fitting (computed once) while the physics is frozen; ``None`` otherwise."""
        if not self.freeze_physics:
            return None
        with torch.no_grad():
            return torch.cat([self.base(x[i:i + chunk], theta[i:i + chunk]) for i in range(0, len(x), chunk)])

    def forward_cached(self, x: torch.Tensor, theta: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([self.normalized_inputs(x, theta), (yb - self.y_mean) / self.y_std], dim=1)
        return yb + self.y_std * self.corr(feats)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        yb = self.base(x, theta)
        feats = torch.cat([self.normalized_inputs(x, theta), (yb - self.y_mean) / self.y_std], dim=1)
        return yb + self.y_std * self.corr(feats)
