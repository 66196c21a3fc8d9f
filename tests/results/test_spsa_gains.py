"""SPSA with Spall's gain schedules converges on a toy quadratic; averaging perturbations helps."""
from __future__ import annotations

import pytest
import torch

from pat_runtime.trainers.spsa import minimize_spsa, spall_gains


def test_spall_gains_decay_with_the_standard_exponents():
    a0, c0 = spall_gains(0, a=1.0, c=0.2, A=10)
    a9, c9 = spall_gains(9, a=1.0, c=0.2, A=10)
    assert a0 == pytest.approx(1 / 11 ** 0.602) and c0 == pytest.approx(0.2)
    assert a9 == pytest.approx(1 / 20 ** 0.602) and c9 == pytest.approx(0.2 / 10 ** 0.101)


def test_spsa_converges_on_a_quadratic():
    w = torch.linspace(0.5, 2.0, 10)
    target = torch.linspace(-1, 1, 10)
    gen = torch.Generator().manual_seed(1)

    def loss(u):   # noisy measurements, like a device
        return float((w * (u - target) ** 2).sum() + 0.01 * torch.randn((), generator=gen))

    u0 = torch.zeros(10)
    d0 = float((u0 - target).norm())
    u1 = minimize_spsa(loss, u0, steps=400, a=0.3, c=0.1, samples=1, seed=0)
    u4 = minimize_spsa(loss, u0, steps=400, a=0.3, c=0.1, samples=4, seed=0)
    assert float((u1 - target).norm()) < 0.02 * d0
    assert float((u4 - target).norm()) < float((u1 - target).norm())
