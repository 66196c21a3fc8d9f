"""Selection reads validation only: best epoch, restored model, test read once; near-chance warning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_runtime.datasets import split_task, with_validation
from pat_runtime.trainers import METHODS, TrainConfig, build_digital, train_loop
from pat_runtime.trainers.common import _score
from pat_runtime.trainers.run import ExperimentConfig, near_chance_warning


def _task(seed=0, scramble_test=False):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 80)
    x = (rng.normal(size=(240, 6)) * 0.6 + np.eye(3, 6)[y] * 1.5).astype(np.float32)
    x = (x - x.min()) / (x.max() - x.min())
    t = with_validation(split_task("toy", "d", x, y, 3, seed=seed), 0.25, seed=seed)
    if scramble_test:   # a different test set: nothing about training or selection may change
        t = type(t)(**{**t.__dict__, "x_test": t.x_test[::-1].copy() * 0.5,
                       "y_test": (t.y_test[::-1] + 1) % 3})
    return t


async def _train(task, eval_test="epoch", epochs=6):
    torch.manual_seed(0)
    model = build_digital(task.n_features, task.n_classes, width=8, layers=1, seed=0)
    cfg = TrainConfig(epochs=epochs, batch=16, lr=0.05, seed=0, eval_test=eval_test)
    hist = await train_loop(METHODS["digital"](model, cfg), task, cfg, None)
    return model, hist


async def test_best_validation_epoch_is_restored_and_reported():
    task = _task()
    model, hist = await _train(task)
    best = max(hist, key=_score)
    assert hist.best_epoch == best.epoch and hist.final["selected_on"] == "val"
    assert hist.final["val_acc"] == best.val_acc and hist.final["test_acc"] == best.test_acc
    # the model left in place is the selected one: its validation accuracy is the selected epoch's
    with torch.no_grad():
        acc = float((model(torch.from_numpy(task.x_val)).argmax(1) == torch.from_numpy(task.y_val)).float().mean())
    assert acc == pytest.approx(best.val_acc)


async def test_selection_never_reads_test():
    a_model, a = await _train(_task(), eval_test="final")
    b_model, b = await _train(_task(scramble_test=True), eval_test="final")
    assert all(m.test_acc is None for m in a)            # not even measured during training
    assert a.best_epoch == b.best_epoch and [m.val_acc for m in a] == [m.val_acc for m in b]
    for pa, pb in zip(a_model.parameters(), b_model.parameters()):
        assert torch.equal(pa, pb)
    assert a.final["test_acc"] is not None and a.final["test_acc"] != b.final["test_acc"]
    _, c = await _train(_task(), eval_test="none")
    assert c.final["test_acc"] is None


async def test_early_stopping_watches_validation():
    task = _task()
    torch.manual_seed(0)
    model = build_digital(task.n_features, task.n_classes, width=8, layers=1, seed=0)
    cfg = TrainConfig(epochs=40, batch=16, lr=0.05, seed=0, patience=2, eval_test="none")
    hist = await train_loop(METHODS["digital"](model, cfg), task, cfg, None)
    assert hist.final["stopped_early"] and len(hist) < 40
    assert len(hist) - hist.best_epoch == 2                 # two epochs without a better validation score


def test_near_chance_warning():
    task = _task()
    cfg = ExperimentConfig(method="spsa", device="sim:circuit", task="toy")
    w = near_chance_warning(cfg, task, {"val_acc": 0.36, "test_acc": 0.35})
    assert w and "near chance" in w and "--spsa-tune" in w
    assert near_chance_warning(cfg, task, {"val_acc": 0.8, "test_acc": 0.8}) is None


def test_one_default_twin_for_cli_and_config():
    import typer

    from pat_runtime.cli import app

    train = typer.main.get_command(app).commands["train"]
    cli_default = next(p.default for p in train.params if p.name == "twin")
    assert cli_default == ExperimentConfig().twin == "greybox"
