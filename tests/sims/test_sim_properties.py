"""Physical plausibility of every simulator: determinism, unit variation, mismatch, ADC use, theta, nonlinearity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_runtime.sims import SIMS, make_sim
from pat_runtime.sims.quality import (linear_residual, mismatch, output_stats, random_inputs, rel_error, theta_effect,
                          true_physics)

KINDS = sorted(SIMS)

#: kind -> (make_sim kwargs, expected (in_dim, param_dim, out_dim))
CONFIGS = {
    "circuit": (dict(in_dim=8, param_dim=4), (8, 4, 8)),
    "plate": (dict(in_dim=16, param_dim=8, out_dim=10), (16, 8, 10)),
    "shg": (dict(in_dim=8, param_dim=16, out_dim=12), (8, 16, 12)),
    "oscillators": (dict(nodes=6), (6, 12, 6)),
    "sensor": (dict(in_dim=20, channels=3, taps=4, windows=5), (20, 18, 15)),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_registry_names_all_five():
    assert set(KINDS) == {"circuit", "plate", "shg", "oscillators", "sensor"}
    for k in KINDS:
        sim = make_sim(k)
        assert sim.spec.kind == f"sim:{k}"
        assert sim.spec.y_range is not None


@pytest.mark.parametrize("kind", KINDS)
def test_same_unit_and_seed_reproduce(kind):
    a, b = make_sim(kind, unit=3, seed=7, noise=0.02), make_sim(kind, unit=3, seed=7, noise=0.02)
    x, t = random_inputs(a.spec, 16, seed=2)
    for k, v in a.hidden_params.items():
        assert torch.equal(v, b.hidden_params[k]), k
    # with noise on, the noise stream is seeded too: the same sequence of calls gives the same data
    for _ in range(2):
        np.testing.assert_array_equal(a.measure(x.numpy(), t.numpy()), b.measure(x.numpy(), t.numpy()))
    quiet = make_sim(kind, unit=3, seed=7, noise=0.0)
    y1, y2 = quiet.measure(x.numpy(), t.numpy()), quiet.measure(x.numpy(), t.numpy())
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("kind", KINDS)
def test_units_and_seeds_differ(kind):
    sims = [make_sim(kind, unit=0, noise=0.0), make_sim(kind, unit=1, noise=0.0), make_sim(kind, unit=0, seed=1, noise=0.0)]
    x, t = random_inputs(sims[0].spec, 64, seed=3)
    ys = [true_physics(s, x, t) for s in sims]
    assert rel_error(ys[1], ys[0]) > 0.05
    assert rel_error(ys[2], ys[0]) > 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_nominal_model_mismatch_is_material(kind):
    """||y_nom - y_true|| / ||y_true - mean|| over six units: material but not overwhelming."""
    x, t = random_inputs(make_sim(kind).spec, 256, seed=0)
    mm = [mismatch(make_sim(kind, unit=u, noise=0.0), x, t) for u in range(6)]
    assert 0.1 <= float(np.mean(mm)) <= 0.6, mm
    assert min(mm) > 0.03, mm
    # with no variation the nominal model is exact
    exact = make_sim(kind, unit=2, noise=0.0, variation=0.0)
    assert mismatch(exact, x, t) < 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_inside_and_using_adc_range(kind):
    sim = make_sim(kind, unit=1, noise=0.0)
    x, t = random_inputs(sim.spec, 512, seed=4)
    y = sim.measure(x.numpy(), t.numpy())
    lo, hi = sim.spec.y_range
    assert y.dtype == np.float32 and y.shape == (512, sim.spec.out_dim)
    assert y.min() >= lo and y.max() <= hi
    st = output_stats(sim, y)
    assert st["clip_fraction"] < 0.02, st
    assert st["std"] > 0.05, st            # not all tiny / constant
    assert st["spread"] > 0.3, st          # the 1-99 % band covers a good part of the ADC range


@pytest.mark.parametrize("kind", KINDS)
def test_theta_changes_the_transform(kind):
    sim = make_sim(kind, noise=0.0)
    x, t1 = random_inputs(sim.spec, 128, seed=5)
    _, t2 = random_inputs(sim.spec, 1, seed=6)
    assert theta_effect(sim, x, t1, t2) > 0.3
    # theta changes how the output responds to x (an x-theta interaction, not only an offset)
    xs = x[:8].double().requires_grad_(True)
    p = {k: v.double() for k, v in sim.hidden_params.items()}
    J1 = torch.autograd.functional.jacobian(lambda z: sim.physics(z, t1.double(), p).sum(0), xs)
    J2 = torch.autograd.functional.jacobian(lambda z: sim.physics(z, t2.double(), p).sum(0), xs)
    assert float((J1 - J2).norm() / J1.norm()) > 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_depend_nonlinearly_on_x(kind):
    sim = make_sim(kind, noise=0.0)
    x, t = random_inputs(sim.spec, 512, seed=7)
    assert linear_residual(sim, x, t) > 0.1
    # and on x at all: a change of x moves the output
    x2, _ = random_inputs(sim.spec, 512, seed=8)
    assert rel_error(true_physics(sim, x2, t), true_physics(sim, x, t)) > 0.3


@pytest.mark.parametrize("kind", KINDS)
def test_smooth_not_chaotic(kind):
    """Small input changes give proportionally small, linearly predicted output changes."""
    sim = make_sim(kind, noise=0.0)
    x, t = random_inputs(sim.spec, 4, seed=9, dtype=torch.float64)
    p = {k: v.double() for k, v in sim.hidden_params.items()}
    g = torch.Generator().manual_seed(0)
    span = (sim.spec.y_range[1] - sim.spec.y_range[0]) / (sim.spec.x_range[1] - sim.spec.x_range[0])
    for i in range(4):
        J = torch.autograd.functional.jacobian(lambda z: sim.physics(z[None], t, p)[0], x[i])
        assert float(torch.linalg.matrix_norm(J, ord=2)) < 10 * span
        d = torch.randn(sim.spec.in_dim, generator=g, dtype=torch.float64)
        d = 0.01 * d / d.norm()
        dy = sim.physics((x[i] + d)[None], t, p)[0] - sim.physics(x[i][None], t, p)[0]
        assert float((dy - J @ d).norm()) < 0.1 * float((J @ d).norm()) + 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_batched_theta_matches_shared_theta(kind):
    sim = make_sim(kind, noise=0.0)
    x, t = random_inputs(sim.spec, 6, seed=10)
    _, t2 = random_inputs(sim.spec, 1, seed=11)
    th = torch.stack([t, t2, t, t2, t, t2])
    with torch.no_grad():
        yb = sim.physics(x, th, sim.hidden_params)
        y1 = sim.physics(x, t, sim.hidden_params)
        y2 = sim.physics(x, t2, sim.hidden_params)
    torch.testing.assert_close(yb[0::2], y1[0::2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(yb[1::2], y2[1::2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_dims_are_configurable(kind):
    kw, dims = CONFIGS[kind]
    sim = make_sim(kind, unit=2, noise=0.01, **kw)
    s = sim.spec
    assert (s.in_dim, s.param_dim, s.out_dim) == dims
    x, t = random_inputs(s, 5, seed=12)
    y = sim.measure(x.numpy(), t.numpy())
    assert y.shape == (5, dims[2]) and np.isfinite(y).all()
    assert s.y_range[0] <= y.min() and y.max() <= s.y_range[1]


@pytest.mark.parametrize("kind", KINDS)
def test_batch_rows_are_independent(kind):
    """A sample's output does not depend on the rest of the batch."""
    sim = make_sim(kind, noise=0.0)
    x, t = random_inputs(sim.spec, 32, seed=13)
    full = true_physics(sim, x, t)
    torch.testing.assert_close(true_physics(sim, x[5:6], t), full[5:6], rtol=1e-4, atol=1e-5)
