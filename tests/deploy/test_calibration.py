"""Calibrate, verify, then switch: budget enforced, switch only if better, canary stop, drift alert."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_runtime.edge.calibration import CALIBRATE_DEPLOY, CALIBRATION, Calibrator, calibrate_on_unit
from pat_runtime.edge.deployed import Deployment
from pat_runtime.edge.service import NodeService
from pat_runtime.artifact import loads, pnn_from_artifact
from pat_runtime.calibration import (Budget, BudgetExceeded, BudgetedDevice, CalibrationPlan, calibration_param_names,
                                 decide, plan_of)
from pat_runtime.fleet.rollout import RolloutConfig, calibrated_rollout, format_table
from pat_runtime.fleet.simnodes import calibrating_fleet, parse_units
from pat_runtime.testing import sim_device
from pat_runtime.testing.calibration import CIRCUIT, CIRCUIT_URI, calibratable_artifact, teacher_labels
from pat_runtime.wire import make_header

torch.set_num_threads(1)
SIM = dict(kind="circuit", unit=2, seed=0, noise=0.0, **CIRCUIT)


def _x(n=48, f=8, seed=0):
    return np.random.default_rng(seed).random((n, f), dtype=np.float32)


async def _node(tmp_path, **cal_kw):
    dev = await sim_device(**SIM)
    svc = NodeService(dev, "node1")
    dep = Deployment(tmp_path / "node1")
    await dep(svc)
    cal = Calibrator(dep, **cal_kw)
    cal(svc)
    return dev, svc, dep, cal


async def _req(svc, type, arrays=(), **fields):
    return await svc.handle(make_header(type, node="node1", **fields), list(arrays))


def test_decide_switches_only_if_threshold_met_and_not_worse():
    assert decide(0.9, 0.8, 0.85).switch
    assert decide(0.9, 0.8, None).switch
    assert decide(0.85, 0.8, 0.85).switch                      # equal is not worse
    d = decide(0.84, 0.8, 0.85)
    assert not d.switch and "worse than the serving" in d.reason
    d = decide(0.79, 0.8, None)
    assert not d.switch and "below the threshold" in d.reason


async def test_param_groups_are_named_in_the_artifact():
    dev = await sim_device(**SIM)
    art, _ = calibratable_artifact(dev.spec, layers=2)
    plan = plan_of(art.metadata)
    model = pnn_from_artifact(art, dev)
    assert plan.params == calibration_param_names(model, "ranges,readout")
    assert set(plan.params) == {"stages.0.a", "stages.0.b", "stages.2.a", "stages.2.b", "stages.4.scale",
                                "stages.4.offset"}
    assert "stages.1.theta" in calibration_param_names(model, "theta")
    with pytest.raises(ValueError, match="unknown calibration group"):
        calibration_param_names(model, "everything")


async def test_budgeted_device_refuses_calls_past_the_budget():
    dev = await sim_device(**SIM)
    b = BudgetedDevice(dev, Budget(calls=3, seconds=60, samples=16))
    x, th = np.zeros((2, 4), np.float32), np.zeros(4, np.float32)
    for _ in range(3):
        await b.apply(x, th)
    with pytest.raises(BudgetExceeded, match="budget of 3"):
        await b.apply(x, th)
    assert dev.calls == 3 and b.used == 3


async def test_calibration_stays_within_its_call_budget_and_sample_budget():
    dev = await sim_device(**SIM)
    _, teacher = calibratable_artifact(dev.spec, seed=1)
    art, _ = calibratable_artifact(dev.spec, seed=2)
    x = _x()
    y = await teacher_labels(teacher, dev, x)
    plan = plan_of(art.metadata)
    for calls in (9, 40):
        cand = pnn_from_artifact(art, dev)
        before = dev.calls
        rep = await calibrate_on_unit(cand, dev, x, y, plan, Budget(calls=calls, seconds=60, samples=48), 0.0)
        assert rep.calls <= calls and dev.calls - before == rep.calls
        assert rep.calibrated is not None and rep.pat_steps >= 1
    with pytest.raises(ValueError, match="exceeds the budget"):
        await calibrate_on_unit(pnn_from_artifact(art, dev), dev, x, y, plan, Budget(calls=40, samples=32), 0.0)
    # a budget too small to verify: nothing switches
    rep = await calibrate_on_unit(pnn_from_artifact(art, dev), dev, x, y, plan, Budget(calls=1, samples=48), 0.0)
    assert not rep.switched and "budget" in rep.reason and rep.calls <= 1


async def test_node_switches_only_to_a_model_that_verifies_better(tmp_path):
    dev, svc, dep, cal = await _node(tmp_path)
    _, teacher = calibratable_artifact(dev.spec, version="teacher", seed=1)
    _, other = calibratable_artifact(dev.spec, version="other", seed=2)
    x = _x()
    y = await teacher_labels(teacher, dev, x)
    assert len(np.unique(y)) >= 2
    budget = {"calls": 60, "seconds": 60, "samples": 48}

    # nothing serving: the teacher (100 % on this unit) verifies above the threshold and is installed
    h, _ = await _req(svc, CALIBRATE_DEPLOY, [np.frombuffer(teacher, np.uint8), x, y], threshold=0.9, budget=budget)
    assert h["ok"], h
    rep = h["report"]
    assert rep["switched"] and rep["serving"] is None and rep["chosen"] >= 0.9
    served = dep.current.artifact.artifact_id
    assert loads(teacher).artifact_id in (served, dep.current.artifact.metadata.get("calibrated", {}).get("parent"))

    # a candidate that verifies worse than the teacher is refused, whatever the threshold
    h, _ = await _req(svc, CALIBRATE_DEPLOY, [np.frombuffer(other, np.uint8), x, y], threshold=0.0, budget=budget)
    rep = h["report"]
    assert h["ok"] and not rep["switched"]
    assert rep["chosen"] < rep["serving"] and "worse than the serving" in rep["reason"]
    assert dep.current.artifact.artifact_id == served

    # a threshold nobody meets keeps the serving model too
    h, _ = await _req(svc, CALIBRATE_DEPLOY, [np.frombuffer(teacher, np.uint8), x, y], threshold=1.01, budget=budget)
    assert not h["report"]["switched"] and "below the threshold" in h["report"]["reason"]
    assert dep.current.artifact.artifact_id == served

    # bad requests get clear errors and change nothing
    h, _ = await _req(svc, CALIBRATE_DEPLOY, [np.frombuffer(teacher, np.uint8), x, y[:3]], budget=budget)
    assert not h["ok"] and h["error"]["code"] == "bad_shape"
    h, _ = await _req(svc, CALIBRATE_DEPLOY, [np.frombuffer(teacher[:-9], np.uint8), x, y], budget=budget)
    assert not h["ok"] and dep.current.artifact.artifact_id == served


async def test_drift_check_alerts_instead_of_serving_silently(tmp_path):
    dev, svc, dep, cal = await _node(tmp_path, recalibrate=False)
    _, teacher = calibratable_artifact(dev.spec, seed=1)
    x = _x()
    y = await teacher_labels(teacher, dev, x)
    h, _ = await _req(svc, CALIBRATE_DEPLOY, [np.frombuffer(teacher, np.uint8), x, y], threshold=0.9,
                      budget={"calls": 60, "samples": 48})
    assert h["report"]["switched"]
    ok = await cal.check()
    assert ok["action"] == "none" and cal.alert is None

    # the unit drifts far (its hidden parameters change): the same check now fails and raises an alert
    sim = dev.sim
    for k, v in sim._p_true.items():
        sim._p_true[k] = v * torch.linspace(0.3, 3.0, v.numel()).reshape(v.shape)
    cal.threshold = 0.999
    res = await cal.check()
    if res["accuracy"] < cal.threshold:
        assert res["action"] == "alert" and cal.alert and "below threshold" in cal.alert
        h, _ = await _req(svc, "status")
        assert h["alert"] == cal.alert and h["calibration"]["alert"] == cal.alert
        h, _ = await _req(svc, CALIBRATION)
        assert h["alert"] == cal.alert and h["drift"]["checks"] == 2
    # a threshold the serving model cannot meet always alerts (never silently serves)
    cal.threshold = 1.01
    res = await cal.check()
    assert res["action"] == "alert" and "below threshold" in cal.alert


async def test_drift_recalibrates_when_allowed(tmp_path):
    dev, svc, dep, cal = await _node(tmp_path, recalibrate=True)
    _, teacher = calibratable_artifact(dev.spec, seed=1)
    x = _x()
    y = await teacher_labels(teacher, dev, x)
    await _req(svc, CALIBRATE_DEPLOY, [np.frombuffer(teacher, np.uint8), x, y], threshold=0.5,
               budget={"calls": 60, "samples": 48})
    cal.threshold = 1.01            # unreachable: the node must try to recalibrate, then alert
    res = await cal.check()
    assert res["action"] == "alert" and "recalibration" in res and cal.drift.recalibrations == 1
    assert not res["recalibration"]["switched"] and "recalibration did not restore" in cal.alert


async def test_canary_failure_stops_the_rollout(tmp_path):
    dev = await sim_device(**SIM)
    _, teacher = calibratable_artifact(dev.spec, seed=1)
    x = _x()
    y = await teacher_labels(teacher, dev, x)
    cfg = RolloutConfig(threshold=1.01, budget=Budget(calls=40, seconds=60, samples=48), canaries=2, timeout=60)
    async with calibrating_fleet(CIRCUIT_URI, parse_units("1-4"), tmp_path) as fleet:
        res = await calibrated_rollout(fleet.coordinator, fleet.node_ids, teacher, x, y, cfg)
        assert res.stopped and "canary failed" in res.reason
        phases = {o.node: o.phase for o in res.outcomes}
        assert phases == {"unit-1": "canary", "unit-2": "canary", "unit-3": "skipped", "unit-4": "skipped"}
        assert all(dep.current is None for dep in fleet.deployments.values())   # nothing switched anywhere
        assert fleet.devices["unit-3"].calls == 0                               # the rest were never touched
        table = format_table(res)
        assert "ROLLOUT STOPPED" in table and "skipped" in table

        # a reachable threshold: canaries pass, then the rest; per-node reports come back
        cfg.threshold = 0.0
        res = await calibrated_rollout(fleet.coordinator, fleet.node_ids, teacher, x, y, cfg)
        assert res.ok and not res.stopped
        assert [o.phase for o in res.outcomes] == ["canary", "canary", "rollout", "rollout"]
        for o in res.outcomes:
            assert o.switched and o.report["calls"] <= 40 and o.report["shipped"] is not None
            assert fleet.deployments[o.node].current is not None


def test_cli_calibrated_fleet_deploy_prints_a_per_unit_table(tmp_path):
    import asyncio

    from typer.testing import CliRunner

    from pat_runtime.artifact import save_artifact
    from pat_runtime.cli import app

    dev = asyncio.run(sim_device(**SIM))
    art, _ = calibratable_artifact(dev.spec, n_features=64, n_classes=10)
    path = tmp_path / "m.pnn"
    save_artifact(path, art)
    base = ["deploy", str(path), "--to", "fleet", "--sim-fleet", CIRCUIT_URI, "--units", "1-3", "--calibrate",
            "--calib-samples", "32", "--max-calls", "200", "--canaries", "1"]
    r = CliRunner().invoke(app, base + ["--threshold", "0", "--report-json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    for n in ("unit-1", "unit-2", "unit-3"):
        assert n in r.output
    assert "3/3 unit(s) switched" in r.output and "calls" in r.output
    r = CliRunner().invoke(app, base + ["--threshold", "1.01"])
    assert r.exit_code == 1 and "ROLLOUT STOPPED" in r.output and "0/3 unit(s) switched" in r.output
    # units that serve a model first: the serving accuracy is measured and compared on every unit
    old, _ = calibratable_artifact(dev.spec, version="old", seed=3, n_features=64, n_classes=10)
    save_artifact(tmp_path / "old.pnn", old)
    r = CliRunner().invoke(app, base + ["--threshold", "0", "--serving", str(tmp_path / "old.pnn"),
                                        "--report-json", str(tmp_path / "r2.json")])
    import json
    reports = [o["report"] for o in json.loads((tmp_path / "r2.json").read_text())["outcomes"] if o["report"]]
    assert reports and all(rep["serving"] is not None for rep in reports)
    assert all(rep["chosen"] >= rep["serving"] for rep in reports if rep["switched"])
    assert r.exit_code == (0 if all(rep["switched"] for rep in reports) and len(reports) == 3 else 1)


def test_plan_roundtrip():
    p = CalibrationPlan(groups=("readout",), params=["stages.3.scale"], reference={"3": {"mean": [1.0], "std": [2.0]}})
    q = CalibrationPlan.from_dict(p.to_dict())
    assert q == p
    assert Budget.from_dict({"calls": 5}).calls == 5
    with pytest.raises(ValueError):
        Budget(calls=0)


async def test_label_free_renormalisation_restores_stage_statistics_and_does_not_switch_unverified():
    from pat_runtime.calibration import physical_stage_inputs, reference_stats, renormalize

    dev = await sim_device(**SIM)
    other = await sim_device(**{**SIM, "unit": 7})
    art, _ = calibratable_artifact(dev.spec, layers=2)
    model = pnn_from_artifact(art, dev)
    x = torch.from_numpy(_x(64))
    plan = plan_of(art.metadata)
    plan.reference = await reference_stats(model, [dev], x)
    model.attach(device=other)
    assert await renormalize(model, x, plan) == 2            # the inter-layer range map and the readout
    # the readout's output on the other unit now has the mean and spread it had on the reference unit
    logits = (await model.aforward(x)).detach()
    ref = plan.reference["4"]
    tol = 1e-3 + 0.02 * max(map(abs, ref["z_mean"]))
    assert torch.allclose(logits.mean(0), torch.tensor(ref["z_mean"]), atol=tol)
    assert torch.allclose(logits.std(0), torch.tensor(ref["z_std"]), atol=tol, rtol=0.02)
    cand = pnn_from_artifact(art, other)
    cand_plan = CalibrationPlan.from_dict({**plan.to_dict()})
    rep = await calibrate_on_unit(cand, other, _x(32), None, cand_plan, Budget(calls=50, samples=32), 0.5)
    assert rep.stage == "renormalized" and not rep.switched and "no labelled data" in rep.reason
    rep = await calibrate_on_unit(cand, other, _x(32), None, cand_plan, Budget(calls=50, samples=32), 0.5,
                                  require_verified=False)
    assert rep.switched and "unverified" in rep.reason and rep.calls <= 50
