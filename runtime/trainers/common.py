"""The shared training loop: epochs of mini-batches, a method-specific step, per-epoch metrics.

Every method sees the same data order (``seed``), the same cross-entropy loss and the same evaluation:

* ``val_acc``/``val_loss`` — accuracy / loss of the *physical* network on the validation split
                      (``await model.aforward``; the digital network's for the digital baseline). All
                      selection reads these: the best epoch (``select="val"`` restores the model of the
                      epoch with the highest validation accuracy) and early stopping (``patience``).
* ``test_acc``      — accuracy of the physical network on the test set, logged per epoch for the curves
                      only (``eval_test="epoch"``; ``None`` with ``eval_test="final"``). It is never read
                      by any selection: the result of a run is the test accuracy of the model selected on
                      validation (:attr:`History.final`).
* ``twin_test_acc`` — what the twin predicts the accuracy is (``model(x)``, no device).
* ``train_loss``/``train_acc`` — running averages over the epoch of what the method optimised
  (physical outputs for PAT and SPSA, twin outputs for in-silico training).
* ``samples_per_s`` — training samples per second of wall time; ``device_calls`` — cumulative
  device calls during training (evaluation included).
"""
from __future__ import annotations

import abc
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pat_runtime.devices.base import Device
from pat_runtime.datasets import Task, batches
from pat_runtime.pat import PNN, PATStep


@dataclass
class TrainConfig:
    epochs: int = 10
    batch: int = 32
    lr: float = 0.02
    seed: int = 0
    #: stop when the validation accuracy (the training loss without a validation split) has not
    #: improved for this many epochs (None: never)
    patience: int | None = None
    #: which epoch's model is the result: "val" = highest validation accuracy (ties: lower validation
    #: loss, then the later epoch), restored at the end; "last" = the final epoch
    select: str = "val"
    #: "epoch": measure the test set after every epoch (curves only); "final": only the selected model;
    #: "none": never (hyper-parameter tuning)
    eval_test: str = "epoch"
    eval_batch: int = 2048
    #: limit the steps per epoch (smoke tests); None = whole training set
    max_steps: int | None = None
    #: SPSA gains (Spall): a_k = spsa_a / (k + 1 + spsa_A)^0.602, c_k = spsa_c / (k + 1)^0.101, with
    #: ``spsa_samples`` perturbations averaged per step (see :mod:`pat_runtime.trainers.spsa`)
    spsa_c: float = 0.2
    spsa_samples: int = 4
    spsa_a: float = 1.0
    spsa_A: float | None = None
    #: learning-rate schedule over epochs: "cosine" (to 5 % of lr at the end) or "constant"
    schedule: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    test_acc: float | None
    test_loss: float | None
    twin_test_acc: float | None
    samples_per_s: float
    device_calls: int
    device_samples: int
    seconds: float
    wall: float = field(default=0.0)
    val_acc: float | None = None
    val_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class History(list):
    """The per-epoch :class:`EpochMetrics` of a run (a list), plus what was selected.

    ``best_epoch``: the epoch whose model is the result (chosen on validation, or the last epoch);
    ``final``: that model's ``val_acc``/``val_loss``/``test_acc``/``test_loss``/``twin_test_acc``/``twin_val_acc``
    (``selected_on`` says "val" or "last"; ``stopped_early`` whether patience ended the run).
    """

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.best_epoch: int | None = None
        self.final: dict[str, Any] = {}
        #: the model state of the best-validation epoch so far (checkpointed, so a resumed run can
        #: still restore it); None without validation selection
        self.best_state: dict[str, torch.Tensor] | None = None


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


def make_adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel when every parameter allows it (one call per step instead of ~10 small
    ops per parameter: measured 110-160 us vs 380-600 us per step for a 2-layer PNN on one CPU thread)."""
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


class GradientMethod(Method):
    """Adam on ``loss(await self.logits(x))`` (``logits`` is physical for PAT, the twin in silico), one
    :class:`pat_runtime.pat.PATStep` per batch."""

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__(model, cfg)
        self.opt = make_adam([p for p in model.parameters() if p.requires_grad], cfg.lr)
        self.sched = make_scheduler(self.opt, cfg)
        self.pat_step = PATStep(model, self.opt, forward=self.logits)

    @abc.abstractmethod
    async def logits(self, x: torch.Tensor) -> torch.Tensor: ...

    async def step(self, x, y):
        return await self.pat_step(x, y)


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


def _score(m: EpochMetrics) -> tuple[float, float, int]:
    """Selection key on validation: accuracy, then lower loss, then the later epoch."""
    return (m.val_acc if m.val_acc is not None else -1.0, -(m.val_loss if m.val_loss is not None else 0.0), m.epoch)


async def train_loop(method: Method, task: Task, cfg: TrainConfig, device: Device | None = None,
                     on_epoch: Callable[[EpochMetrics], None] | None = None,
                     progress: bool = False, desc: str = "", start_epoch: int = 1,
                     history: History | None = None) -> History:
    """Run epochs ``start_epoch..cfg.epochs`` of ``method`` on ``task`` (or fewer, with early stopping);
    return the metrics of each epoch.

    With a validation split (``task.x_val``) and ``cfg.select == "val"`` the model of the epoch with the
    best validation accuracy is restored at the end; the test split is then read once for that model
    (or its epoch's logged test metrics are reused with ``eval_test="epoch"``). Nothing here ever reads
    test metrics to decide anything.

    A resumed run (``start_epoch`` > 1; data order and schedule depend only on the epoch number) passes
    the ``history`` of its finished epochs, with ``history.best_state`` the model of its best-validation
    epoch (see :mod:`pat_runtime.trainers.checkpoint`): selection and early stopping then continue as if the
    run had never stopped. ``history.best_state`` is kept current during the run, so an ``on_epoch``
    callback can checkpoint it.
    """
    if cfg.select not in ("val", "last"):
        raise ValueError(f"unknown select {cfg.select!r}: use 'val' or 'last'")
    if cfg.eval_test not in ("epoch", "final", "none"):
        raise ValueError(f"unknown eval_test {cfg.eval_test!r}: use 'epoch', 'final' or 'none'")
    model = method.model
    is_pnn = isinstance(model, PNN)
    physical_eval = is_pnn and device is not None
    xtr, ytr = task.x_train, task.y_train
    xte, yte = torch.from_numpy(task.x_test), torch.from_numpy(task.y_test)
    has_val = task.x_val is not None and len(task.x_val) > 0
    xva = torch.from_numpy(task.x_val) if has_val else None
    yva = torch.from_numpy(task.y_val) if has_val else None
    select_val = has_val and cfg.select == "val"
    best: EpochMetrics | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early = False
    n_batches = math.ceil(len(xtr) / cfg.batch)
    if cfg.max_steps:
        n_batches = min(n_batches, cfg.max_steps)
    calls0 = device.calls if device is not None else 0
    samples0 = device.samples if device is not None else 0
    if history is None:
        history = History()
    best_loss, stale = math.inf, 0

    def track(m: EpochMetrics, snapshot: bool) -> bool:
        """Selection and early-stopping bookkeeping after epoch ``m`` (``snapshot``: ``model`` is that
        epoch's model, keep a copy when it is the best); True when patience ends the run."""
        nonlocal best, best_state, best_loss, stale
        improved = False
        if select_val:
            if best is None or _score(m) > _score(best):
                best, improved = m, True
                if snapshot:
                    best_state = copy.deepcopy(model.state_dict())
        if cfg.patience is None:
            return False
        if not has_val:
            improved = m.train_loss < best_loss - 1e-4
            best_loss = min(best_loss, m.train_loss)
        elif not select_val:
            improved = best is None or _score(m)[:2] > _score(best)[:2]
            if improved:
                best = m
        stale = 0 if improved else stale + 1
        return stale >= cfg.patience

    for m in history:   # a resumed run: replay its finished epochs
        stopped_early = track(m, False)
    best_state = history.best_state if select_val else None
    if select_val and history and best_state is None:
        # a checkpoint without the best epoch's model: the resumed (last finished) model is the best known
        best, best_state = history[-1], copy.deepcopy(model.state_dict())
    if stopped_early:
        start_epoch = cfg.epochs + 1
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
            val_loss = val_acc = None
            if has_val:
                val_loss, val_acc = await evaluate(model, xva, yva, physical_eval, cfg.eval_batch)
            test_loss = test_acc = twin_acc = None
            if cfg.eval_test == "epoch":
                test_loss, test_acc = await evaluate(model, xte, yte, physical_eval, cfg.eval_batch)
                twin_acc = (await evaluate(model, xte, yte, False, cfg.eval_batch))[1] if is_pnn else None
            m = EpochMetrics(epoch=epoch, train_loss=sum(losses) / max(seen, 1), train_acc=correct / max(seen, 1),
                             test_acc=test_acc, test_loss=test_loss, twin_test_acc=twin_acc,
                             samples_per_s=seen / max(train_time, 1e-9),
                             device_calls=(device.calls - calls0) if device is not None else 0,
                             device_samples=(device.samples - samples0) if device is not None else 0,
                             seconds=time.perf_counter() - t0, wall=time.perf_counter() - t_start,
                             val_acc=val_acc, val_loss=val_loss)
            history.append(m)
            stop = track(m, select_val)
            history.best_state = best_state
            if bar is not None:
                shown = {"val": f"{val_acc:.3f}"} if val_acc is not None else {}
                if test_acc is not None:
                    shown["test"] = f"{test_acc:.3f}"
                bar.set_postfix(epoch=epoch, loss=f"{m.train_loss:.3f}", **shown, refresh=False)
            if on_epoch:
                on_epoch(m)
            if stop:
                stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
    await _finish(history, model, task, cfg, physical_eval, is_pnn,
                  best if select_val else None, best_state if select_val else None, stopped_early)
    return history


async def _finish(history: History, model: nn.Module, task: Task, cfg: TrainConfig, physical_eval: bool,
                  is_pnn: bool, best: EpochMetrics | None, best_state: dict[str, torch.Tensor] | None,
                  stopped_early: bool) -> None:
    """Restore the selected model and record its validation and test metrics in ``history.final``."""
    if not history:
        history.final = {}
        return
    chosen = best if best is not None else history[-1]
    if best_state is not None and chosen is not history[-1]:
        model.load_state_dict(best_state)
    final = {"epoch": chosen.epoch, "selected_on": "val" if best is not None else "last",
             "stopped_early": stopped_early, "val_acc": chosen.val_acc, "val_loss": chosen.val_loss,
             "test_acc": chosen.test_acc, "test_loss": chosen.test_loss, "twin_test_acc": chosen.twin_test_acc,
             "twin_val_acc": None}
    xte, yte = torch.from_numpy(task.x_test), torch.from_numpy(task.y_test)
    if chosen.test_acc is None and cfg.eval_test == "final":   # the test split is read once, here
        final["test_loss"], final["test_acc"] = await evaluate(model, xte, yte, physical_eval, cfg.eval_batch)
        if is_pnn:
            final["twin_test_acc"] = (await evaluate(model, xte, yte, False, cfg.eval_batch))[1]
    if is_pnn and task.x_val is not None and len(task.x_val):
        final["twin_val_acc"] = (await evaluate(model, torch.from_numpy(task.x_val), torch.from_numpy(task.y_val),
                                                False, cfg.eval_batch))[1]
    history.best_epoch = chosen.epoch
    history.final = final


def chance_level(y: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class of ``y``."""
    y = np.asarray(y)
    return float(np.bincount(y).max() / len(y)) if len(y) else math.nan


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
