"""Second-order effects: the true forward differs from the datasheet model, each effect on its own, all off
by one switch, strengths from URI options, and twins never run the true forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_runtime.devices.factory import make_device
from pat_runtime.sims import SIMS, make_sim
from pat_runtime.sims.quality import random_inputs, rel_error

KINDS = sorted(SIMS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _datasheet(sim, x, t):
    with torch.no_grad():
        return sim.physics(x, t, sim.hidden_params)


@pytest.mark.parametrize("kind", KINDS)
def test_every_stock_sim_documents_effects_on_by_default(kind):
    sim = make_sim(kind, unit=1, noise=0.0)
    assert len(sim.effect_defaults) >= 3
    assert all(v > 0 for v in sim.effect_defaults.values())
    assert all(v > 0 for v in sim.effect.values())
    x, t = random_inputs(sim.spec, 128, seed=0)
    with torch.no_grad():
        gap = rel_error(sim.true_forward(x, t), _datasheet(sim, x, t))
    assert 0.05 < gap < 0.6, gap                       # material, but the datasheet model is still the physics


@pytest.mark.parametrize("kind", KINDS)
def test_effects_off_is_the_datasheet_model_within_noise(kind):
    x, t = random_inputs(make_sim(kind).spec, 128, seed=1)
    exact = make_sim(kind, unit=2, noise=0.0, effects=0, dac_bits=None, adc_bits=None)
    assert not any(exact.effect.values())
    np.testing.assert_allclose(exact.measure(x.numpy(), t.numpy()), _datasheet(exact, x, t).numpy(),
                               rtol=1e-5, atol=1e-6)
    noisy = make_sim(kind, unit=2, noise=0.01, effects="off")
    lo, hi = noisy.spec.y_range
    dev = noisy.measure(x.numpy(), t.numpy()) - _datasheet(noisy, x, t).numpy()
    assert dev.std() < 1.2 * 0.01 * (hi - lo)
    assert abs(dev.mean()) < 0.2 * 0.01 * (hi - lo)


@pytest.mark.parametrize("kind", KINDS)
def test_each_effect_changes_the_output(kind):
    defaults = make_sim(kind).effect_defaults
    x, t = random_inputs(make_sim(kind).spec, 64, seed=2)
    for name, strength in defaults.items():
        only = make_sim(kind, unit=0, noise=0.0, **{k: (strength if k == name else 0.0) for k in defaults})
        assert [k for k, v in only.effect.items() if v] == [name]
        with torch.no_grad():
            gap = rel_error(only.true_forward(x, t), _datasheet(only, x, t))
        assert gap > 0.01, (name, gap)
        twice = make_sim(kind, unit=0, noise=0.0, **{k: (2 * strength if k == name else 0.0) for k in defaults})
        with torch.no_grad():
            assert rel_error(twice.true_forward(x, t), _datasheet(twice, x, t)) > gap, name


def test_strength_options_and_the_global_switch_from_uris():
    dev = make_device("sim:plate?crosstalk=0.1&unit=2")
    assert dev.sim.effect_nominal["crosstalk"] == pytest.approx(0.1)
    assert dev.sim.effect_nominal["heating"] == pytest.approx(dev.sim.effect_defaults["heating"])
    assert "crosstalk" not in dev.sim.options           # effects are not part of the datasheet options
    assert not any(make_device("sim:shg?effects=off").sim.effect.values())
    assert not any(make_device("sim:shg?effects=0").sim.effect.values())
    doubled = make_device("sim:sensor?effects=2").sim
    assert doubled.effect_nominal == pytest.approx({k: 2 * v for k, v in doubled.effect_defaults.items()})
    with pytest.raises(ValueError, match="effects"):
        make_sim("plate", effects="sometimes")
    with pytest.raises(ValueError, match="non-negative"):
        make_sim("plate", crosstalk=-1)


def test_effect_strengths_vary_between_units_but_are_fixed_per_unit():
    a, b, a2 = make_sim("plate", unit=0), make_sim("plate", unit=1), make_sim("plate", unit=0)
    assert a.effect == a2.effect and a.effect != b.effect
    assert make_sim("plate", unit=1, variation=0.0).effect == make_sim("plate").effect_nominal
    # the datasheet parameters of a unit do not depend on its effects
    off = make_sim("plate", unit=1, effects=0)
    for k, v in b.hidden_params.items():
        assert torch.equal(v, off.hidden_params[k]), k


def test_a_datasheet_only_simulator_refuses_the_true_forward():
    sim = make_sim("plate", datasheet_only=True)
    x, t = random_inputs(sim.spec, 4, seed=0)
    with pytest.raises(RuntimeError, match="datasheet"):
        sim.true_forward(x, t)
    with pytest.raises(RuntimeError, match="datasheet"):
        sim.measure(x.numpy(), t.numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_effect_names_never_shadow_construction_options(kind):
    import inspect

    from pat_runtime.sims import sim_class
    from pat_runtime.sims.base import Simulator

    cls = sim_class(kind)
    taken = set(inspect.signature(cls.make_spec).parameters) | set(inspect.signature(Simulator.__init__).parameters)
    assert not taken & set(cls.effect_defaults)
