"""The physics of every simulator is differentiable in x, theta and the physical parameters p."""
from __future__ import annotations

import pytest
import torch

from pat_runtime.sims import SIMS, make_sim
from pat_runtime.sims.quality import random_inputs

KINDS = sorted(SIMS)

#: tiny configurations for float64 gradcheck
TINY = {
    "circuit": dict(in_dim=3, param_dim=2, substeps=2),
    "plate": dict(in_dim=3, param_dim=2, out_dim=3, modes=4),
    "shg": dict(in_dim=3, param_dim=2, out_dim=3, ppv=2),
    "oscillators": dict(nodes=3, steps=12),
    "sensor": dict(in_dim=6, channels=2, taps=2, windows=2),
}


@pytest.mark.parametrize("kind", KINDS)
def test_autograd_gradients_exist_and_are_finite(kind):
    sim = make_sim(kind, unit=1, noise=0.0)
    x, t = random_inputs(sim.spec, 8, seed=0)
    x.requires_grad_(True)
    t.requires_grad_(True)
    p = {k: v.clone().requires_grad_(True) for k, v in sim.hidden_params.items()}
    y = sim.physics(x, t, p)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (y * w).sum().backward()
    for name, g in [("x", x.grad), ("theta", t.grad)] + [(k, v.grad) for k, v in p.items()]:
        assert g is not None, f"no gradient for {name}"
        assert torch.isfinite(g).all(), f"non-finite gradient for {name}"
    assert x.grad.abs().sum() > 0 and t.grad.abs().sum() > 0
    # every physical parameter influences the output (a twin can learn each of them)
    for k, v in p.items():
        assert v.grad.abs().sum() > 0, f"parameter {k} has no effect"


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_float64(kind):
    sim = make_sim(kind, unit=2, noise=0.0, **TINY[kind])
    x, t = random_inputs(sim.spec, 2, seed=3, dtype=torch.float64)
    x.requires_grad_(True)
    t.requires_grad_(True)
    names = list(sim.hidden_params)
    pvals = [v.double().requires_grad_(True) for v in sim.hidden_params.values()]

    def f(x, t, *pv):
        return sim.physics(x, t, dict(zip(names, pv)))

    assert torch.autograd.gradcheck(f, (x, t, *pvals), eps=1e-6, atol=1e-5, rtol=1e-4)
