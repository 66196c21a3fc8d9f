"""Black-box twin: an MLP on the normalised ``[x̂, θ̂]``, predicting standardised outputs.

    y = μ_y + σ_y ⊙ MLP([x̂, θ̂])        (μ_y, σ_y from the training data in :meth:`prepare`)
"""
from __future__ import annotations

import torch
from torch import nn

from pat_runtime.devices.spec import DeviceSpec

from .base import Twin


def mlp(n_in: int, n_out: int, hidden: int, depth: int, zero_last: bool = False) -> nn.Sequential:
    dims = [n_in] + [hidden] * depth
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    last = nn.Linear(dims[-1], n_out)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class MLPTwin(Twin):
    kind = "mlp"
    default_lr = 2e-3

    def __init__(self, spec: DeviceSpec, hidden: int = 256, depth: int = 3):
        super().__init__(spec)
        self.hidden, self.depth = int(hidden), int(depth)
        self.net = mlp(spec.in_dim + spec.param_dim, spec.out_dim, self.hidden, self.depth)
        self.register_buffer("y_mean", torch.zeros(spec.out_dim))
        self.register_buffer("y_std", torch.ones(spec.out_dim))

    def config(self):
        return {"hidden": self.hidden, "depth": self.depth}

    @torch.no_grad()
    def prepare(self, x, theta, y):
        self.y_mean.copy_(y.mean(0))
        self.y_std.copy_(y.std(0).clamp(min=1e-6))

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.y_mean + self.y_std * self.net(self.normalized_inputs(x, theta))
