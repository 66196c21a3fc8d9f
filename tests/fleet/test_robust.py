"""Multi-unit PAT: shared parameters trained on every unit, per-unit copies of the calibratable ones."""
from __future__ import annotations

import torch

from pat_runtime.calibration import calibration_param_names
from pat_runtime.fleet.robust import MultiUnitTrainer, evaluate_units
from pat_runtime.testing.calibration import two_circuit_units

torch.set_num_threads(1)


async def test_multi_unit_training_shares_theta_and_keeps_per_unit_copies():
    devs, twin, model, x, y = await two_circuit_units()
    names = calibration_param_names(model, "readout")
    theta0 = model.stages[1].theta.detach().clone()
    tr = MultiUnitTrainer(model, devs, twin, lr=0.05, epochs=2, batch=32, per_unit=names)
    hist = await tr.train(x, y)
    assert len(hist) == 2 and hist[-1].device_calls > 0
    assert all(d.calls > 0 for d in devs)                      # every unit measured
    assert not torch.equal(model.stages[1].theta.detach(), theta0)   # shared θ trained
    a, b = tr.unit_state(0), tr.unit_state(1)
    assert set(a) == set(names) and not torch.equal(a[names[0]], b[names[0]])   # each unit its own copy
    named = dict(model.named_parameters())
    for n in names:                                             # the model ships their mean
        assert torch.allclose(named[n], (a[n] + b[n]) / 2)
    ref = await tr.reference(torch.from_numpy(x))
    assert set(ref) == {"0", "2", "4"} and len(ref["4"]["z_mean"]) == 3
    accs = await evaluate_units(model, devs, x, y)
    assert len(accs) == 2 and all(0.0 <= v <= 1.0 for v in accs)
