"""Twin data design, the datasheet-only rule, the residual twin and the best-twin choice."""
from __future__ import annotations

import numpy as np
import pytest

from pat_runtime.testing import sim_device
from pat_runtime.twins import (collect, fit_best_twin, fit_twin, make_twin, nmse, sim_options_of, split3,
                           twin_choices)
from pat_runtime.sims.base import Simulator


pytestmark = pytest.mark.usefixtures("one_torch_thread")


async def test_collect_draws_theta_every_few_rows_on_a_space_filling_design():
    dev = await sim_device("circuit", seed=1, in_dim=4, param_dim=4)
    data = await collect(dev, 640, repeats=2, seed=0, theta_every=16)
    assert dev.calls == 2 * 40                                  # one device call per θ group and repeat
    assert len(np.unique(data.theta, axis=0)) == 40
    # Latin hypercube: every θ coordinate has one group in each of the 40 strata
    strata = np.floor((data.theta[::16] + 1) / 2 * 40).astype(int)
    assert all(len(set(strata[:, j])) == 40 for j in range(strata.shape[1]))
    train, val, test = split3(data, 0.2, 0.1, seed=0)
    groups = [set(np.unique(d.group)) for d in (train, val, test)]
    assert len(train) + len(val) + len(test) == 640
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])


async def test_twin_fitting_never_runs_the_true_forward(monkeypatch):
    calls: list[int] = []
    real = Simulator.true_forward

    def spy(self, *a, **kw):
        calls.append(id(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Simulator, "true_forward", spy)
    dev = await sim_device("circuit", seed=4, in_dim=4, param_dim=4)
    data = await collect(dev, 256, repeats=1, seed=0)
    n_measured = len(calls)
    assert n_measured == dev.calls and set(calls) == {id(dev.sim)}
    for kind in ("nominal", "greybox", "residual"):
        twin = make_twin(kind, dev.spec, sim_options=sim_options_of(dev))
        fit_twin(twin, data, epochs=1, seed=0)
        sim = twin.base.sim if kind == "residual" else twin.sim
        assert sim.datasheet_only and not any(sim.effect.values())
    assert len(calls) == n_measured                             # fitting and evaluating: datasheet physics only


async def test_residual_twin_beats_the_greybox_where_physics_is_missing():
    # a plate whose detector channels leak into their neighbours: no datasheet parameter can express it
    effects = dict(heating=0, memory=0, extra_modes=0, saturation=0, crosstalk=0.15)
    dev = await sim_device("plate", seed=3, unit=1, in_dim=8, param_dim=8, out_dim=8, **effects)
    twin, rep, data = await fit_best_twin(dev, kinds=("greybox", "residual"), n_samples=2048, epochs=25, seed=0)
    grey, res = rep.candidates["greybox"], rep.candidates["residual"]
    assert res["nmse_test"] < 0.5 * grey["nmse_test"], (res["nmse_test"], grey["nmse_test"])
    assert res["nmse_before"] == pytest.approx(grey["nmse_val"])     # it started from the fitted grey box
    assert twin.kind == "residual" and twin.base.sim.datasheet_only


async def test_best_twin_keeps_the_lowest_validation_nmse_and_reports_all():
    dev = await sim_device("circuit", seed=5, in_dim=4, param_dim=4)
    twin, rep, data = await fit_best_twin(dev, kinds=("nominal", "greybox", "mlp"), n_samples=1024, epochs=6,
                                          seed=0)
    assert set(rep.candidates) == {"nominal", "greybox", "mlp"}
    vals = {k: c["nmse_val"] for k, c in rep.candidates.items()}
    assert rep.kind == min(vals, key=vals.get) == twin.kind
    _, val, test = split3(data, seed=0)
    assert nmse(twin, val) == pytest.approx(vals[twin.kind], rel=1e-5)
    assert rep.nmse_test == pytest.approx(nmse(twin, test), rel=1e-5)
    assert rep.n_test > 0 and "candidates" in str(rep)
    assert "best" in twin_choices()


async def test_best_twin_on_a_device_without_a_datasheet_model_falls_back_to_the_mlp():
    from pat_runtime.devices.local import LocalDevice
    from pat_runtime.devices.spec import DeviceSpec
    from pat_runtime.sims import make_sim

    class LabDevice(LocalDevice):                               # real hardware: no simulator kind to model
        async def _connect(self, timeout):
            self._spec = DeviceSpec.from_dict({**self.sim.spec.to_dict(), "kind": "lab:circuit"})

    dev = LabDevice(make_sim("circuit", seed=6, in_dim=4, param_dim=4), threaded=False)
    await dev.connect()
    twin, rep, _ = await fit_best_twin(dev, kinds=("greybox", "mlp"), n_samples=512, epochs=2, seed=0)
    assert twin.kind == "mlp" and set(rep.candidates) == {"mlp"}


def test_pat_twin_kind_best_says_which_twin_won(tmp_path):
    import json

    from typer.testing import CliRunner

    from pat_runtime.cli import app

    rep = tmp_path / "best.json"
    r = CliRunner().invoke(app, ["twin", "--device", "sim:circuit?in_dim=4&param_dim=4", "--kind", "best",
                                 "--samples", "512", "--epochs", "2", "--report", str(rep)])
    assert r.exit_code == 0, r.output
    report = json.loads(rep.read_text())
    assert set(report["candidates"]) == {"nominal", "greybox", "residual", "mlp"}
    vals = {k: c["nmse_val"] for k, c in report["candidates"].items()}
    assert report["kind"] == min(vals, key=vals.get)
    assert f"twin {report['kind']}: held-out NMSE" in r.output and "noise floor" in r.output
    assert "lowest validation NMSE chosen" in r.output


async def test_collect_rows_measures_the_same_design_with_many_theta_per_call():
    """bench/twin_quality.py --direct: the design of `collect` (same x, θ, groups), one θ per row, and the
    same measurements as one device call per group (noiseless, stateless simulator)."""
    from pat_runtime.sims import make_sim
    from pat_runtime.twins.collect import collect_rows

    dev = await sim_device("plate", seed=1, noise=0.0)
    ref = await collect(dev, 200, repeats=1, seed=3, theta_every=16)
    sim = make_sim("plate", seed=1, noise=0.0)
    calls = []
    data = collect_rows(lambda x, th: calls.append(len(x)) or sim.measure(x, th), sim.spec, 200, repeats=2,
                        seed=3, theta_every=16, chunk=64)
    assert calls == [64, 64, 64, 8] * 2                       # whole groups per call, every row measured twice
    assert np.array_equal(data.x, ref.x) and np.array_equal(data.theta, ref.theta)
    assert np.array_equal(data.group, ref.group) and len(np.unique(data.theta, axis=0)) == 13
    step = 1.0 / ((1 << 12) - 1)                                # one ADC level
    assert np.abs(data.y - ref.y).max() <= step + 1e-6
    assert data.y_repeats.shape == (2, 200, sim.spec.out_dim) and data.noise_floor < 1e-3
    with pytest.raises(ValueError):
        collect_rows(sim.measure, sim.spec, 0)
