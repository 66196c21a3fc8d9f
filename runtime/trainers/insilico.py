"""In-silico training: forward and backward through the twin only; the device is used for evaluation.

This is the standard baseline. Whatever the twin gets wrong (the *reality gap*) is invisible during
training and shows up as the gap between ``twin_test_acc`` and the physical ``test_acc``.
"""
from __future__ import annotations

import torch

from .common import GradientMethod


class InSilicoMethod(GradientMethod):
    name = "insilico"
    physical = False

    async def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
