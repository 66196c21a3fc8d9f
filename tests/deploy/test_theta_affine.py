"""The ``theta_affine`` calibration group: a per-channel gain/offset of θ, identity at the start, trained only
while calibrating (or as per-unit copies in multi-unit training), baked into θ so artifacts stay plain PNNs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_runtime.artifact import loads, pnn_from_artifact, pnn_to_artifact, dumps
from pat_runtime.calibration import (Budget, BudgetedDevice, CalibrationPlan, calibrate_pat, ThetaAffine, calibration_param_names, parse_groups,
                                     plan_of)
from pat_runtime.edge.calibration import twin_for
from pat_runtime.fleet.robust import MultiUnitTrainer
from pat_runtime.testing import sim_device
from pat_runtime.testing.calibration import CIRCUIT, calibratable_artifact, teacher_labels, two_circuit_units

torch.set_num_threads(1)
SIM = dict(kind="circuit", unit=2, seed=0, noise=0.0, **CIRCUIT)


def _x(n=48, f=8, seed=0):
    return np.random.default_rng(seed).random((n, f), dtype=np.float32)


def _thetas(model):
    return [layer.theta.detach().clone() for layer in model.physical_layers]


async def test_theta_affine_names_two_numbers_per_channel_and_is_identity_at_start():
    dev = await sim_device(**SIM)
    art, _ = calibratable_artifact(dev.spec, layers=2)
    model = pnn_from_artifact(art, dev)
    names = calibration_param_names(model, "ranges,readout,theta_affine")
    assert {"stages.1.theta_gain", "stages.1.theta_offset", "stages.3.theta_gain", "stages.3.theta_offset"} \
        <= set(names)
    assert not any(n.endswith(".theta") for n in names)          # θ itself stays shared
    with pytest.raises(ValueError, match="exclude each other"):
        parse_groups("theta,theta_affine")
    before = _thetas(model)
    aff = ThetaAffine(model, names)
    assert [tuple(p.shape) for p in aff.parameters()] == [(layer.channels, 1) for layer in model.physical_layers
                                                          for _ in range(2)]
    aff.apply_()                                                   # identity: θ unchanged
    assert all(torch.equal(a, b) for a, b in zip(before, _thetas(model)))
    # not model parameters: the model's state (and so its artifact) has no extra tensor
    assert set(model.state_dict()) == set(pnn_from_artifact(art, dev).state_dict())


async def test_theta_gain_offset_is_trained_only_in_calibration_and_survives_the_artifact_roundtrip():
    dev = await sim_device(**SIM)
    other = await sim_device(**{**SIM, "unit": 5})
    _, teacher = calibratable_artifact(dev.spec, seed=1)
    art, _ = calibratable_artifact(dev.spec, seed=2)
    x = _x()
    y = await teacher_labels(teacher, other, x)
    plan = plan_of(art.metadata)
    plan.groups = parse_groups("theta_affine")
    cand = pnn_from_artifact(art, other)
    plan.params = calibration_param_names(cand, plan.groups)
    theta0 = _thetas(cand)
    frozen = {n: p.detach().clone() for n, p in cand.named_parameters() if not n.endswith(".theta")}
    dev = BudgetedDevice(other, Budget(calls=40, seconds=60, samples=48)).start()
    cand.attach(device=dev, twin=twin_for(plan, other.spec))
    rep = await calibrate_pat(cand, dev, torch.from_numpy(x), torch.from_numpy(y), plan, epochs=50)
    assert dev.used <= 40 and rep.steps >= 2 and rep.stopped == "calls"
    # everything but θ is untouched, and θ moved only along its channel's gain and offset
    assert all(torch.equal(p.detach(), frozen[n]) for n, p in cand.named_parameters() if n in frozen)
    moved = False
    for t0, t1, layer in zip(theta0, _thetas(cand), cand.physical_layers):
        lo, hi = layer.spec.theta_range
        for c in range(layer.channels):
            inside = (t1[c] > lo) & (t1[c] < hi)
            if int(inside.sum()) < 2:
                continue
            A = torch.stack([t0[c][inside], torch.ones(int(inside.sum()))], 1).double()
            sol = torch.linalg.lstsq(A, t1[c][inside].double()[:, None]).solution
            assert torch.allclose((A @ sol)[:, 0], t1[c][inside].double(), atol=1e-5)
            moved |= not torch.allclose(t0[c], t1[c])
    assert moved
    # the calibrated θ is an ordinary θ: an artifact round trip keeps it exactly
    back = pnn_from_artifact(loads(dumps(pnn_to_artifact(cand, "cal", metadata=art.metadata))), other)
    assert all(torch.equal(a, b) for a, b in zip(_thetas(cand), _thetas(back)))


async def test_multi_unit_training_keeps_a_theta_gain_offset_per_unit():
    devs, twin, model, x, y = await two_circuit_units()
    names = calibration_param_names(model, "readout,theta_affine")
    tr = MultiUnitTrainer(model, devs, twin, lr=0.05, epochs=2, batch=32, per_unit=names)
    assert torch.equal(tr.unit_params[0]["stages.1.theta_gain"], torch.ones(model.stages[1].channels, 1))
    assert torch.equal(tr.unit_params[0]["stages.1.theta_offset"], torch.zeros(model.stages[1].channels, 1))
    await tr.train(x, y)
    g0, g1 = (tr.unit_params[k]["stages.1.theta_gain"].detach() for k in (0, 1))
    assert not torch.equal(g0, g1)                                # each unit its own gain
    s0 = tr.unit_state(0)                                         # ... expressed as that unit's θ
    assert "stages.1.theta" in s0 and "stages.1.theta_gain" not in s0
    s1 = tr.unit_state(1)
    lo, hi = model.stages[1].spec.theta_range
    assert not torch.equal(s0["stages.1.theta"], s1["stages.1.theta"])
    assert all(float(s["stages.1.theta"].min()) >= lo and float(s["stages.1.theta"].max()) <= hi for s in (s0, s1))
    plan = CalibrationPlan.for_model(model, "readout,theta_affine")
    assert CalibrationPlan.from_dict(plan.to_dict()).groups == ("readout", "theta_affine")


async def test_spsa_search_of_the_theta_gain_offset_costs_two_more_passes_per_step():
    dev = await sim_device(**SIM)
    other = await sim_device(**{**SIM, "unit": 5})
    _, teacher = calibratable_artifact(dev.spec, seed=1)
    art, _ = calibratable_artifact(dev.spec, seed=2)
    x = _x(32)
    y = await teacher_labels(teacher, other, x)
    plan = plan_of(art.metadata)
    cand = pnn_from_artifact(art, other)
    plan.groups, plan.affine_search, plan.batch = parse_groups("theta_affine"), "spsa", 32
    plan.params = calibration_param_names(cand, plan.groups)
    assert CalibrationPlan.from_dict(plan.to_dict()).affine_search == "spsa"
    with pytest.raises(ValueError, match="affine_search"):
        CalibrationPlan.from_dict({**plan.to_dict(), "affine_search": "guess"})
    per_pass = sum(layer.channels for layer in cand.physical_layers)
    bdev = BudgetedDevice(other, Budget(calls=3 * 3 * per_pass + 1, seconds=60, samples=32)).start()
    cand.attach(device=bdev, twin=twin_for(plan, other.spec))
    theta0 = _thetas(cand)
    rep = await calibrate_pat(cand, bdev, torch.from_numpy(x), torch.from_numpy(y), plan, epochs=10)
    assert rep.steps == 3 and bdev.used == 9 * per_pass and rep.stopped == "calls"
    assert any(not torch.equal(a, b) for a, b in zip(theta0, _thetas(cand)))
