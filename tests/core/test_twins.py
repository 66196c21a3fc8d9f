"""Twins: data collection, fitting lowers error, grey-box calibration, save/load."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pat_runtime.testing import sim_device
from pat_runtime.twins import (collect, evaluate_twin, fit_twin, load_twin, make_twin, nmse, save_twin,
                           sim_options_of, twin_kinds)


async def test_collect_shapes_ranges_theta_per_batch_and_noise_floor():
    dev = await sim_device("plate", seed=1)
    data = await collect(dev, 300, batch=128, repeats=3, seed=0)
    s = dev.spec
    assert data.x.shape == (300, s.in_dim) and data.theta.shape == (300, s.param_dim)
    assert data.y.shape == (300, s.out_dim) and data.y_repeats.shape == (3, 300, s.out_dim)
    assert dev.calls == 3 * 3                                 # 3 batches (128, 128, 44) x 3 repeats
    assert data.x.min() >= s.x_range[0] and data.x.max() <= s.x_range[1]
    for g in np.unique(data.group):                           # one θ per measured batch
        th = data.theta[data.group == g]
        assert np.all(th == th[0])
    assert 0 < data.noise_floor < 0.05
    train, val = data.split(0.34, seed=0)
    assert len(train) + len(val) == 300
    assert not set(np.unique(train.group)) & set(np.unique(val.group))

    quiet = await sim_device("plate", seed=1, noise=0.0)
    assert (await collect(quiet, 64, repeats=2)).noise_floor == 0.0


async def test_fitting_lowers_error_and_save_load(tmp_path):
    cdev = await sim_device("circuit", seed=2)
    cdata = await collect(cdev, 4096, batch=256, repeats=2, seed=0)
    mlp = make_twin("mlp", cdev.spec, hidden=128, depth=2)
    rep = fit_twin(mlp, cdata, epochs=30, seed=0, patience=None)
    assert rep.nmse_val < 0.4 * rep.nmse_before and rep.nmse_val < 0.4
    assert len(rep.history) == 30 and rep.n_val > 0 and rep.noise_floor > 0

    # a plate without its second-order effects: the datasheet family can then describe it up to noise
    # (with effects on, the residual twin's job: tests/core/test_twin_best.py)
    dev = await sim_device("plate", seed=2, effects=0)
    data = await collect(dev, 2048, batch=256, repeats=2, seed=0)

    nominal = make_twin("nominal", dev.spec, sim_options=sim_options_of(dev))
    nom_err = evaluate_twin(nominal, data).nmse_val
    grey = make_twin("greybox", dev.spec, sim_options=sim_options_of(dev))
    g_rep = fit_twin(grey, data, epochs=8, seed=0)
    assert g_rep.nmse_before == pytest.approx(nmse(nominal, data.split(0.2, 0)[1]), rel=1e-5)
    assert g_rep.nmse_val < 0.25 * nom_err                  # calibration removes most of the mismatch
    assert g_rep.nmse_val < 3 * data.noise_floor + 0.01     # and gets near the noise floor

    for twin, d in ((mlp, cdata), (grey, data), (nominal, data)):
        x, th = torch.from_numpy(d.x[:16]), torch.from_numpy(d.theta[:16])
        path = save_twin(twin, tmp_path / f"{twin.kind}.pt")
        back = load_twin(path)
        assert back.kind == twin.kind
        assert torch.allclose(back(x, th), twin(x, th), atol=1e-6)


async def test_greybox_recovers_hidden_parameters_roughly():
    dev = await sim_device("circuit", variation=0.3, seed=3)
    data = await collect(dev, 1536, batch=128, repeats=2, seed=0)
    twin = make_twin("greybox", dev.spec, sim_options=sim_options_of(dev))
    rep = fit_twin(twin, data, epochs=10, seed=0)
    assert rep.nmse_val < 0.1 * rep.nmse_before
    true, nom = dev.sim.hidden_params, dev.sim.nominal_params()
    fit = {k: v.detach() for k, v in twin.params().items()}
    dyn = ["l", "c", "r", "g_d", "v_0"]                      # the dynamics (a, v_a, b trade off with gain/offset)
    err = lambda p: sum(abs(math.log(float(p[k]) / float(true[k]))) for k in dyn) / len(dyn)  # noqa: E731
    assert err(fit) < 0.7 * err(nom)
    for k in ("l", "c", "g_d"):
        assert abs(math.log(float(fit[k]) / float(true[k]))) < 0.15, k


async def test_nominal_twin_is_the_datasheet_model_and_residual_starts_there():
    dev = await sim_device("circuit")
    x = torch.rand(8, 16) * 2 - 1
    th = torch.rand(16) * 2 - 1
    nominal = make_twin("nominal", dev.spec, sim_options=sim_options_of(dev))
    assert not nominal.trainable
    assert torch.allclose(nominal(x, th), dev.sim.nominal_forward(x, th), atol=1e-6)
    residual = make_twin("residual", dev.spec, sim_options=sim_options_of(dev))
    assert torch.allclose(residual(x, th), nominal(x, th), atol=1e-6)
    assert set(twin_kinds()) >= {"mlp", "greybox", "residual", "nominal"}


def test_unknown_kinds_give_clear_errors():
    from pat_runtime.devices.spec import DeviceSpec

    spec = DeviceSpec(kind="lab:laser", in_dim=2, param_dim=2, out_dim=2)
    with pytest.raises(ValueError, match="grey-box twin needs a simulated kind"):
        make_twin("greybox", spec)
    with pytest.raises(ValueError, match="unknown twin kind"):
        make_twin("oracle", spec)
    assert make_twin("mlp", spec)(torch.zeros(3, 2), torch.zeros(2)).shape == (3, 2)


@pytest.mark.parametrize("epochs", [1, 2, 5, 10])
async def test_fitting_a_few_steps_runs_the_whole_schedule(epochs):
    """Tiny data sets (a quick twin of an instrument) give 1-20 optimizer steps; every count must fit."""
    dev = await sim_device("circuit", seed=3)
    data = await collect(dev, 64, batch=16, repeats=2, seed=0)
    mlp = make_twin("mlp", dev.spec, hidden=16, depth=1)
    rep = fit_twin(mlp, data, epochs=epochs, batch=64, seed=0, patience=None)
    assert len(rep.history) == epochs and math.isfinite(rep.nmse_val)
