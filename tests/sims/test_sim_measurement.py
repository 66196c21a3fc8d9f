"""The instrument around the physics: drift, noise, DAC/ADC quantization, latency, device URIs."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pat_runtime.devices.errors import OutOfRangeError
from pat_runtime.devices.factory import make_device
from pat_runtime.sims import SIMS, make_sim
from pat_runtime.sims.quality import random_inputs

KINDS = sorted(SIMS)


@pytest.mark.parametrize("kind", KINDS)
def test_drift_changes_outputs_over_calls(kind):
    still = make_sim(kind, unit=0, noise=0.0, drift=0.0)
    moving = make_sim(kind, unit=0, noise=0.0, drift=0.02)
    x, t = random_inputs(still.spec, 32, seed=0)
    xs, ts = x.numpy(), t.numpy()
    y0 = still.measure(xs, ts)
    for _ in range(20):
        np.testing.assert_array_equal(still.measure(xs, ts), y0)
        y_last = moving.measure(xs, ts)
    y_first = make_sim(kind, unit=0, noise=0.0).measure(xs, ts)
    span = moving.spec.y_range[1] - moving.spec.y_range[0]
    assert np.abs(y_last - y_first).max() > 0.01 * span
    changed = [k for k, v in moving.hidden_params.items() if not torch.equal(v, moving.p_unit[k])]
    assert changed, "drift left every hidden parameter unchanged"
    # advance_drift moves the parameters without a measurement
    before = moving.hidden_params
    moving.advance_drift(5)
    assert any(not torch.equal(before[k], v) for k, v in moving.hidden_params.items())


@pytest.mark.parametrize("kind", KINDS)
def test_noise_has_the_stated_size(kind):
    sigma = 0.02
    sim = make_sim(kind, unit=1, noise=sigma)
    quiet = make_sim(kind, unit=1, noise=0.0)
    x, t = random_inputs(sim.spec, 64, seed=1)
    xs, ts = x.numpy(), t.numpy()
    ys = np.stack([sim.measure(xs, ts) for _ in range(24)])
    lo, hi = sim.spec.y_range
    inside = (ys > lo) & (ys < hi)                      # ignore the few clipped readings
    dev = (ys - quiet.measure(xs, ts))[inside]
    expected = sigma * (hi - lo)
    assert 0.85 * expected < dev.std() < 1.15 * expected
    assert abs(dev.mean()) < 0.1 * expected
    # repeat-to-repeat variation is there even though x and theta are identical
    assert np.abs(ys[0] - ys[1]).max() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_dac_quantization_levels(kind):
    bits = 3
    sim = make_sim(kind, unit=0, noise=0.0, dac_bits=bits, adc_bits=None)
    lo, hi = sim.spec.x_range
    x0, t = random_inputs(sim.spec, 1, seed=2)
    x = np.repeat(x0.numpy(), 301, axis=0)
    x[:, 0] = np.linspace(lo, hi, 301)                  # sweep the first input across its whole range
    y = sim.measure(x, t.numpy())
    # identical DAC codes give identical outputs (up to float32 rounding that differs between batch rows)
    span = sim.spec.y_range[1] - sim.spec.y_range[0]
    rows = np.unique(np.round(y.astype(np.float64) / span, 5), axis=0)
    assert len(rows) == 2 ** bits


@pytest.mark.parametrize("kind", KINDS)
def test_adc_quantization_levels(kind):
    bits = 4
    sim = make_sim(kind, unit=0, noise=0.0, adc_bits=bits)
    x, t = random_inputs(sim.spec, 256, seed=3)
    y = sim.measure(x.numpy(), t.numpy()).astype(np.float64)
    lo, hi = sim.spec.y_range
    step = (hi - lo) / (2 ** bits - 1)
    codes = (y - lo) / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert 3 <= len(np.unique(np.round(codes))) <= 2 ** bits
    fine = make_sim(kind, unit=0, noise=0.0, adc_bits=12).measure(x.numpy(), t.numpy())
    assert len(np.unique(fine)) > 2 ** bits


@pytest.mark.parametrize("kind", KINDS)
async def test_device_uri_and_latency(kind, monkeypatch):
    dev = make_device(f"sim:{kind}?unit=3&noise=0.02&latency=0.05")
    await dev.connect()
    sim = dev.sim
    assert (sim.unit, sim.noise, sim.latency) == (3, 0.02, 0.05)
    x, t = random_inputs(dev.spec, 4, seed=4)
    t0 = time.perf_counter()
    y = await dev.apply(x.numpy(), t.numpy())
    assert time.perf_counter() - t0 >= 0.05             # LocalDevice sleeps the latency
    assert y.shape == (4, dev.spec.out_dim) and y.dtype == np.float32
    # the simulator only stores the latency: a 5 s latency does not slow a direct measurement
    slow = make_sim(kind, latency=5.0)
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    slow.measure(x.numpy(), t.numpy())
    assert slow.latency == 5.0 and slept == []
    bad = x.numpy().copy()
    bad[0, 0] = dev.spec.x_range[1] + 0.5
    with pytest.raises(OutOfRangeError):
        await dev.apply(bad, t.numpy())
    await dev.close()
