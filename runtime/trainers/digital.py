"""Digital baseline: a conventional MLP of the same depth and widths as the PNN, no device at all.

    u -> Linear(F, C·in) -> tanh -> [Linear(C·in, C·in) -> tanh] × (K - 1) -> Linear(C·in, classes)

Its dense matrices give it far more parameters than the PNN (reported by ``n_parameters``): it is a
reference for what the task allows at that size, not a like-for-like competitor.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import GradientMethod


def build_digital(n_features: int, n_classes: int, width: int, layers: int = 2, seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods: list[nn.Module] = [nn.Linear(n_features, width), nn.Tanh()]
        for _ in range(layers - 1):
            mods += [nn.Linear(width, width), nn.Tanh()]
        mods.append(nn.Linear(width, n_classes))
        return nn.Sequential(*mods)


class DigitalMethod(GradientMethod):
    name = "digital"
    physical = False

    async def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
