"""A resumed run selects on validation among all its epochs: the checkpoint carries the model of the
best-validation epoch so far, so interrupt + resume selects the same epoch and model as one uninterrupted run."""
from __future__ import annotations

import asyncio

import pytest
import torch

from pat_runtime.datasets import load_task, with_validation
from pat_runtime.trainers.checkpoint import load_checkpoint
from pat_runtime.trainers.common import History, TrainConfig, seed_everything, train_loop
from pat_runtime.trainers.digital import DigitalMethod, build_digital
from pat_runtime.trainers.run import ExperimentConfig, run_experiment


class _StopAt:
    def __init__(self, epoch: int):
        self.epoch = epoch

    def log_epoch(self, row):
        if row["epoch"] == self.epoch:
            raise KeyboardInterrupt

    def close(self):
        pass


def test_resume_keeps_best_validation_model(tmp_path):
    cfg = ExperimentConfig(method="digital", epochs=3, batch=64, seed=3, max_steps=8)
    full = asyncio.run(run_experiment(cfg, out=tmp_path / "full", checkpoint=True))
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run_experiment(cfg, out=part, loggers=[_StopAt(2)]))
    state = load_checkpoint(part)
    assert state["epoch"] == 2 and "best_model" in state
    resumed = asyncio.run(run_experiment(cfg, out=part, resume=part))
    assert resumed.summary["best_epoch"] == full.summary["best_epoch"]
    assert resumed.summary["selected"] == full.summary["selected"]
    assert [m.val_acc for m in resumed.history] == [m.val_acc for m in full.history]
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


class _Spoils(DigitalMethod):
    """Learns for two epochs, then wrecks its weights at the end of every later epoch (validation drops)."""

    def end_epoch(self, epoch: int) -> None:
        super().end_epoch(epoch)
        if epoch >= 3:
            g = torch.Generator().manual_seed(epoch)
            with torch.no_grad():
                for p in self.model.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 5)


def test_train_loop_resumed_history_restores_an_early_best_epoch():
    task = with_validation(load_task("digits", seed=0), 0.2, seed=0)
    cfg = TrainConfig(epochs=4, batch=64, lr=0.02, seed=0)

    def fresh():
        seed_everything(0)
        model = build_digital(task.n_features, task.n_classes, 32, 2, 0)
        return model, _Spoils(model, cfg)

    model, method = fresh()
    full = asyncio.run(train_loop(method, task, cfg))
    assert full.best_epoch == 2 and full[2].val_acc < full[1].val_acc   # the case this test is about

    model, method = fresh()
    saved = {}

    def stop_after_2(m):
        if m.epoch == 2:
            saved["model"] = {k: v.clone() for k, v in model.state_dict().items()}
            saved["opt"] = method.opt.state_dict()
            raise KeyboardInterrupt

    part = History()

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(train_loop(method, task, cfg, on_epoch=stop_after_2, history=part))
    best_state = part.best_state
    assert best_state is not None

    model, method = fresh()
    model.load_state_dict(saved["model"])
    method.opt.load_state_dict(saved["opt"])
    done = History(part)
    done.best_state = best_state
    resumed = asyncio.run(train_loop(method, task, cfg, start_epoch=3, history=done))
    assert resumed.best_epoch == 2 and resumed.final == full.final
    assert [m.val_acc for m in resumed] == [m.val_acc for m in full]
    for k, v in best_state.items():
        assert torch.equal(model.state_dict()[k], v), k     # the epoch-2 model was restored at the end
