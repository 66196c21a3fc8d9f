"""Training for a fleet, not a unit: PAT across several units at once, evaluated on a held-out unit.

Every mini-batch is cut into one shard per training unit; shard ``k`` runs through the PNN with every
physical layer measured on unit ``k`` (its own hidden variation) and PAT's backward through the twin at
the measured inputs (the rule of :meth:`pat_runtime.pat.PNN.aforward`). The losses of all shards are
summed, so one update sees every unit and θ is pushed towards settings that work on all of them.

Per-unit parameters (``per_unit``: names from :func:`pat_runtime.calibration.calibration_param_names`): each
training unit gets its *own* copy of these (e.g. the range maps and the readout's scale/offset), exactly
what a node will later re-fit on its own unit, while everything else stays shared. The shared part is thus
trained to be good *given* per-unit calibration. The model returned carries the mean of the per-unit copies
(the starting point a new unit calibrates from).

:func:`evaluate_units` measures the physical accuracy of a model on any units (training ones and held-out).
This is the local, in-process form (devices are :class:`pat_runtime.devices.base.Device` objects, e.g. one
``LocalDevice`` per ``sim:KIND?unit=N``); over a real fleet the same shards go through
:class:`pat_runtime.fleet.training.FleetTrainer`.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from pat_runtime.devices.base import Device
from pat_runtime.datasets import batches
from pat_runtime.calibration import is_theta_affine, reference_stats, theta_affine_values
from pat_runtime.pat import PNN, PATStep, PhysicalLayer


@dataclass
class RobustEpoch:
    epoch: int
    loss: float
    accuracy: float
    seconds: float
    device_calls: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def unit_forward(model: PNN, x: torch.Tensor, device: Device, twin: Any,
                       overrides: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The PNN's physical forward on ``device`` with PAT's twin backward; ``overrides`` replaces named
    parameters (``stages.i.name``) by this unit's own copies."""
    ov = dict(overrides or {})
    for i, s in enumerate(model.stages):     # this unit's θ gain/offset (``theta_affine``) -> the θ it makes
        pre = f"stages.{i}"
        if isinstance(s, PhysicalLayer) and f"{pre}.theta_gain" in ov:
            ov[f"{pre}.theta"] = theta_affine_values(ov.get(f"{pre}.theta", s.theta), ov.pop(f"{pre}.theta_gain"),
                                                     ov.pop(f"{pre}.theta_offset"), s.spec.theta_range)
    return await model.aforward(x, resolver=lambda k, layer: (device, twin), overrides=ov)


class MultiUnitTrainer:
    """Data-parallel PAT over ``devices`` (one shard per unit and batch), shared θ, optional per-unit copies."""

    def __init__(self, model: PNN, devices: Sequence[Device], twin: Any, *, lr: float = 0.05, epochs: int = 30,
                 batch: int = 64, seed: int = 0, per_unit: Sequence[str] = ()):
        if not devices:
            raise ValueError("multi-unit training needs at least one device")
        self.model, self.devices, self.twin = model, list(devices), twin
        self.epochs, self.batch, self.seed = int(epochs), int(batch), int(seed)
        named = dict(model.named_parameters())
        bad = [n for n in per_unit if n not in named and not (is_theta_affine(n) and self._layer_of(n) is not None)]
        if bad:
            raise ValueError(f"per-unit parameters not in the model: {bad}")
        self.per_unit = list(per_unit)
        #: unit index -> its own copies of the per-unit parameters (a θ gain/offset starts as the identity)
        self.unit_params: list[dict[str, nn.Parameter]] = [
            {n: nn.Parameter(self._initial(n, named)) for n in self.per_unit} for _ in self.devices]
        self._theta_shared: dict[str, torch.Tensor] | None = None
        shared = [p for n, p in named.items() if n not in self.per_unit and p.requires_grad]
        own = [p for d in self.unit_params for p in d.values()]
        self.opt = torch.optim.Adam(shared + own, lr=lr)
        self.step = PATStep(model, self.opt, params=shared + own)   # one update from every unit's shard
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(self.epochs, 1),
                                                                eta_min=0.05 * lr)
        self.history: list[RobustEpoch] = []

    async def train(self, x: np.ndarray, y: np.ndarray, progress: bool = False) -> list[RobustEpoch]:
        K = len(self.devices)
        for epoch in range(1, self.epochs + 1):
            t0 = time.perf_counter()
            c0 = sum(d.calls for d in self.devices)
            loss_sum, correct, seen = 0.0, 0, 0
            self.model.train()
            for xb, yb in batches(x, y, self.batch, seed=self.seed * 100003 + epoch):
                xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)
                parts = [(k, idx) for k, idx in enumerate(np.array_split(np.arange(len(xb)), K)) if len(idx)]
                outs = await asyncio.gather(*(unit_forward(self.model, xt[idx], self.devices[k], self.twin,
                                                           self.unit_params[k]) for k, idx in parts))
                logits = torch.cat(outs)
                order = torch.from_numpy(np.concatenate([idx for _, idx in parts]))
                loss, grads = self.step.gradients(logits, yt[order])
                self.step.apply(grads)
                self._project()
                loss_sum += float(loss.detach()) * len(xb)
                correct += int((logits.argmax(1) == yt[order]).sum())
                seen += len(xb)
            self.sched.step()
            ep = RobustEpoch(epoch, loss_sum / max(seen, 1), correct / max(seen, 1), time.perf_counter() - t0,
                             sum(d.calls for d in self.devices) - c0)
            self.history.append(ep)
            if progress:
                print(f"  epoch {epoch}: loss {ep.loss:.3f} train acc {ep.accuracy:.3f} ({ep.seconds:.1f} s)",
                      flush=True)
        self.finalize()
        return self.history

    def _layer_of(self, name: str) -> PhysicalLayer | None:
        try:
            layer = self.model.get_submodule(name.rsplit(".", 1)[0])
        except AttributeError:
            return None
        return layer if isinstance(layer, PhysicalLayer) else None

    def _initial(self, name: str, named: dict[str, nn.Parameter]) -> torch.Tensor:
        if not is_theta_affine(name):
            return named[name].detach().clone()
        layer = self._layer_of(name)
        return (torch.ones if name.endswith("theta_gain") else torch.zeros)(layer.channels, 1)

    @torch.no_grad()
    def _project(self) -> None:
        """Clamp the units' own θ copies into range (the shared θ is clamped by ``PATStep.apply``)."""
        for d in self.unit_params:
            for n, p in d.items():
                if n.endswith(".theta"):
                    layer = self.model.get_submodule(n.rsplit(".", 1)[0])
                    p.clamp_(*layer.spec.theta_range)

    @torch.no_grad()
    def finalize(self) -> None:
        """Write the mean of the per-unit copies into the model (what a new unit starts calibrating from)."""
        named = dict(self.model.named_parameters())
        for n in self.per_unit:
            if not is_theta_affine(n):
                named[n].copy_(torch.stack([d[n].detach() for d in self.unit_params]).mean(0))
        affine = sorted({n.rsplit(".", 1)[0] for n in self.per_unit if is_theta_affine(n)})
        if self._theta_shared is None:      # the shared θ the per-unit gains/offsets act on
            self._theta_shared = {pre: named[f"{pre}.theta"].detach().clone() for pre in affine}
        for pre in affine:                  # ship θ under the mean gain/offset; a node calibrates from there
            g, o = (torch.stack([d[f"{pre}.{k}"].detach() for d in self.unit_params]).mean(0)
                    for k in ("theta_gain", "theta_offset"))
            named[f"{pre}.theta"].copy_(theta_affine_values(self._theta_shared[pre], g, o,
                                                            self._layer_of(f"{pre}.theta").spec.theta_range))

    async def reference(self, x: torch.Tensor) -> dict[str, dict[str, list[float]]]:
        """Reference statistics for label-free re-normalisation, each training unit with its own per-unit
        parameters (:func:`pat_runtime.calibration.reference_stats`)."""
        return await reference_stats(self.model, self.devices, x,
                                     [self.unit_state(k) for k in range(len(self.devices))])

    def unit_state(self, k: int) -> dict[str, torch.Tensor]:
        """Training unit ``k``'s own values of the per-unit parameters, as model parameters (a θ gain/offset
        as the θ it makes of the shared θ: ``stages.i.theta``)."""
        out = {n: p.detach().clone() for n, p in self.unit_params[k].items() if not is_theta_affine(n)}
        named = dict(self.model.named_parameters())
        for pre in sorted({n.rsplit(".", 1)[0] for n in self.per_unit if is_theta_affine(n)}):
            base = (self._theta_shared or {}).get(pre, named[f"{pre}.theta"].detach())
            out[f"{pre}.theta"] = theta_affine_values(base, self.unit_params[k][f"{pre}.theta_gain"].detach(),
                                                      self.unit_params[k][f"{pre}.theta_offset"].detach(),
                                                      self._layer_of(f"{pre}.theta").spec.theta_range).clone()
        return out


async def evaluate_units(model: PNN, devices: Sequence[Device], x: np.ndarray, y: np.ndarray,
                         batch: int = 2048) -> list[float]:
    """Physical test accuracy of ``model`` on each device (the model is re-attached to each in turn)."""
    accs = []
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    model.eval()
    for dev in devices:
        model.attach(device=dev)
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xt), batch):
                correct += int((( await model.aforward(xt[i:i + batch])).argmax(1) == yt[i:i + batch]).sum())
        accs.append(correct / len(xt))
    return accs


__all__ = ["MultiUnitTrainer", "RobustEpoch", "evaluate_units", "unit_forward"]
