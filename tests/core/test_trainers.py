"""Trainers: SPSA improves the loss, the loop's metrics, digital baseline, and PAT beats in-silico (slow)."""
from __future__ import annotations

import pytest
import torch

from pat_runtime.datasets import load_task
from pat_runtime.pat import build_pnn
from pat_runtime.testing import sim_device
from pat_runtime.trainers import METHODS, TrainConfig, build_digital, evaluate, train_loop
from pat_runtime.trainers.run import ExperimentConfig, run_experiment
from pat_runtime.twins import make_twin, sim_options_of


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", seed=0)


async def _plate_model(digits, seed=0):
    dev = await sim_device("plate")
    twin = make_twin("nominal", dev.spec, sim_options=sim_options_of(dev))
    model = build_pnn(digits.n_features, digits.n_classes, twin, dev, layers=2, seed=seed)
    model.calibrate(torch.from_numpy(digits.x_train[:256]))
    return dev, model


async def test_spsa_improves_the_physical_loss(digits):
    dev, model = await _plate_model(digits)
    x, y = torch.from_numpy(digits.x_train[:400]), torch.from_numpy(digits.y_train[:400])
    loss0, _ = await evaluate(model, x, y, physical=True)
    cfg = TrainConfig(epochs=4, batch=64, lr=0.05, seed=0, spsa_samples=1)
    method = METHODS["spsa"](model, cfg)
    calls0 = dev.calls
    hist = await train_loop(method, digits, cfg, dev)
    loss1, _ = await evaluate(model, x, y, physical=True)
    assert loss1 < loss0 - 0.2, (loss0, loss1)
    steps = 4 * -(-digits.n_train // 64)
    # two perturbed physical forwards per step (2 layers x 2 channels each) plus one test evaluation per epoch
    assert hist[-1].device_calls == steps * 2 * 4 + 4 * 4


async def test_loop_metrics_and_device_accounting(digits):
    dev, model = await _plate_model(digits)
    cfg = TrainConfig(epochs=2, batch=128, lr=0.05, seed=0, max_steps=3)
    seen = []
    hist = await train_loop(METHODS["pat"](model, cfg), digits, cfg, dev, on_epoch=seen.append)
    assert [m.epoch for m in hist] == [1, 2] and seen == hist
    for m in hist:
        assert 0 <= m.test_acc <= 1 and 0 <= m.twin_test_acc <= 1 and m.samples_per_s > 0
    # per epoch: 3 steps x 2 layers x 2 channels, plus one physical test evaluation (2 x 2 calls)
    assert hist[0].device_calls == 3 * 4 + 4
    assert hist[1].device_calls == 2 * (3 * 4 + 4)
    assert hist[1].device_samples > hist[0].device_samples

    dev2, model2 = await _plate_model(digits)
    hist2 = await train_loop(METHODS["insilico"](model2, cfg), digits, cfg, dev2)
    assert hist2[-1].device_calls == 2 * 4                   # in silico: the device only evaluates


async def test_digital_baseline_learns(digits):
    model = build_digital(digits.n_features, digits.n_classes, width=64, layers=2, seed=0)
    cfg = TrainConfig(epochs=8, batch=64, lr=0.01, seed=0)
    hist = await train_loop(METHODS["digital"](model, cfg), digits, cfg, None)
    assert hist[-1].test_acc > 0.9
    assert hist[-1].device_calls == 0 and hist[-1].twin_test_acc is None


async def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        await run_experiment(ExperimentConfig(method="backprop"))


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_pat_beats_insilico_under_hidden_mismatch(digits):
    """Acceptance: on the plate (hidden unit variation) with the nominal twin, PAT >= in-silico + 10 points."""
    torch.set_num_threads(1)
    res = {}
    for method in ("pat", "insilico"):
        cfg = ExperimentConfig(device="sim:plate", task="digits", method=method, twin="nominal", epochs=30,
                               batch=64, seed=0)
        r = await run_experiment(cfg, task=digits)
        res[method] = r.summary
    pat, ins = res["pat"]["test_acc"], res["insilico"]["test_acc"]
    assert pat >= 0.75, pat
    assert pat - ins >= 0.10, (pat, ins)
    # the twin believed its in-silico model was good: the gap is the reality gap, not under-training
    assert res["insilico"]["twin_test_acc"] - ins >= 0.10
