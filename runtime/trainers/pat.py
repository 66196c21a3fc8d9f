"""Physics-aware training: forward on the device, backward through the twin (see :mod:`pat_runtime.pat`)."""
from __future__ import annotations

import torch

from .common import GradientMethod


class PATMethod(GradientMethod):
    name = "pat"
    physical = True

    async def logits(self, x: torch.Tensor) -> torch.Tensor:
        return await self.model.aforward(x)
