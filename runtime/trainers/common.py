"""The shared training loop: epochs of mini-batches, a method-specific step, per-epoch metrics.

Every method sees the same data order (``seed``), the same cross-entropy loss and the same evaluation:

* ``test_acc``      — accuracy of the *physical* network on the test set (``await model.aforward``);
                      for the digital baseline, the digital network's accuracy.
* ``twin_test_acc`` — what the twin predicts the accuracy is (``model(x)``, no device).
* ``train_loss``/``train_acc`` — running averages over the epoch of what the method optimised
  (physical outputs for PAT and SPSA, twin outputs for in-silico training).
* ``samples_per_s`` — training samples per second of wall time; ``device_calls`` — cumulative
  device calls during training (evaluation included).
"""
from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from devices.base import Device
from runtime.datasets import Task, batches
from runtime.pat import PNN


@dataclass
class TrainConfig:
    epochs: int = 10
    batch: int = 32
    lr: float = 0.02
    seed: int = 0
    #: stop when the training loss has not improved for this many epochs (None: never)
    patience: int | None = None
    eval_batch: int = 2048
    #: limit the steps per epoch (smoke tests); None = whole training set
    max_steps: int | None = None
    #: SPSA perturbation size and number of perturbations averaged per step
    spsa_c: float = 0.05
    spsa_samples: int = 1
    #: learning-rate schedule over epochs: "cosine" (to 5 % of lr at the end) or "constant"
    schedule: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    test_acc: float
    test_loss: float
    twin_test_acc: float | None
    samples_per_s: float
    device_calls: int
    device_samples: int
    seconds: float
    wall: float = field(default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Method(abc.ABC):
    """A training method: ``setup`` once, then ``await step(xb, yb) -> (loss, logits)`` per batch."""

    name: str = "method"
    #: does this method need the device during training?
    physical: bool = True

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        self.model, self.cfg = model, cfg

    @abc.abstractmethod
    async def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]: ...

    def end_epoch(self, epoch: int) -> None:
        """Hook called after each epoch (e.g. LR schedules)."""
        sched = getattr(self, "sched", None)
        if sched is not None:
            sched.step()


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    """Per-epoch LR schedule for ``opt`` (``None`` for a constant rate)."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule != "cosine":
        raise ValueError(f"unknown schedule {cfg.schedule!r}: use 'cosine' or 'constant'")
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1), eta_min=0.05 * cfg.lr)


class GradientMethod(Method):
    """Adam on ``loss(await self.logits(x))`` (``logits`` is physical for PAT, the twin in silico)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__(model, cfg)
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        self.sched = make_scheduler(self.opt, cfg)

    @abc.abstractmethod
    async def logits(self, x: torch.Tensor) -> torch.Tensor: ...

    async def step(self, x, y):
        self.model.train()
        out = await self.logits(x)
        loss = F.cross_entropy(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if isinstance(self.model, PNN):
            self.model.project_()
        return float(loss.detach()), out.detach()


async def predict(model: nn.Module, x: torch.Tensor, physical: bool, batch: int = 2048) -> torch.Tensor:
    """Logits of ``model`` for ``x`` in chunks; ``physical`` uses the device (``aforward``)."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch]
            outs.append(await model.aforward(xb) if physical else model(xb))
    return torch.cat(outs)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


async def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, physical: bool,
                   batch: int = 2048) -> tuple[float, float]:
    """``(loss, accuracy)`` of ``model`` on ``(x, y)``."""
    out = await predict(model, x, physical, batch)
    return float(F.cross_entropy(out, y)), accuracy(out, y)


async def train_loop(method: Method, task: Task, cfg: TrainConfig, device: Device | None = None,
                     on_epoch: Callable[[EpochMetrics], None] | None = None,
                     progress: bool = False, desc: str = "", start_epoch: int = 1) -> list[EpochMetrics]:
    """Run epochs ``start_epoch..cfg.epochs`` of ``method`` on ``task`` and return the metrics of each epoch
    (``start_epoch`` > 1 continues a resumed run: data order and schedule depend only on the epoch number)."""
    model = method.model
    is_pnn = isinstance(model, PNN)
    physical_eval = is_pnn and device is not None
    xtr, ytr = task.x_train, task.y_train
    xte, yte = torch.from_numpy(task.x_test), torch.from_numpy(task.y_test)
    n_batches = math.ceil(len(xtr) / cfg.batch)
    if cfg.max_steps:
        n_batches = min(n_batches, cfg.max_steps)
    calls0 = device.calls if device is not None else 0
    samples0 = device.samples if device is not None else 0
    history: list[EpochMetrics] = []
    best_loss, stale = math.inf, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max(0, cfg.epochs - start_epoch + 1) * n_batches, desc=desc or method.name, unit="batch", dynamic_ncols=True,
                   mininterval=0.5)
    t_start = time.perf_counter()
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            losses, correct, seen = [], 0, 0
            for k, (xb, yb) in enumerate(batches(xtr, ytr, cfg.batch, seed=cfg.seed * 100003 + epoch)):
                if k >= n_batches:
                    break
                xb_t, yb_t = torch.from_numpy(xb), torch.from_numpy(yb)
                loss, out = await method.step(xb_t, yb_t)
                losses.append(loss * len(yb))
                correct += int((out.argmax(1) == yb_t).sum())
                seen += len(yb)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            train_time = time.perf_counter() - t0
            method.end_epoch(epoch)
            test_loss, test_acc = await evaluate(model, xte, yte, physical_eval, cfg.eval_batch)
            twin_acc = (await evaluate(model, xte, yte, False, cfg.eval_batch))[1] if is_pnn else None
            m = EpochMetrics(epoch=epoch, train_loss=sum(losses) / max(seen, 1), train_acc=correct / max(seen, 1),
                             test_acc=test_acc, test_loss=test_loss, twin_test_acc=twin_acc,
                             samples_per_s=seen / max(train_time, 1e-9),
                             device_calls=(device.calls - calls0) if device is not None else 0,
                             device_samples=(device.samples - samples0) if device is not None else 0,
                             seconds=time.perf_counter() - t0, wall=time.perf_counter() - t_start)
            history.append(m)
            if bar is not None:
                bar.set_postfix(epoch=epoch, loss=f"{m.train_loss:.3f}", test=f"{test_acc:.3f}", refresh=False)
            if on_epoch:
                on_epoch(m)
            if cfg.patience is not None:
                if m.train_loss < best_loss - 1e-4:
                    best_loss, stale = m.train_loss, 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
    finally:
        if bar is not None:
            bar.close()
    return history


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
