"""Fit a twin to measured data and report its held-out error.

    NMSE = mean_i ||f_m(x_i, θ_i) - y_i||² / mean_i ||y_i - ȳ||²

on held-out splits of whole measurement groups (rows that share θ stay together): a **validation** split
picks the best state during fitting (and the best twin kind, :func:`pat_runtime.twins.fit_best_twin`), a
**test** split that no choice ever looks at gives the reported held-out NMSE. The noise floor (from repeats,
see :class:`~pat_runtime.twins.collect.TwinData`) is the NMSE a perfect twin would reach against single
measurements; a twin near the floor has learned everything learnable.

Early stopping never truncates the learning-rate schedule: the one-cycle schedule always runs to its end
(unless ``patience`` is given) and the state with the lowest validation NMSE is kept.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from .base import Twin
from .collect import TwinData


@dataclass
class TwinReport:
    kind: str
    nmse_before: float
    nmse_train: float
    nmse_val: float
    noise_floor: float
    n_train: int
    n_val: int
    epochs: int
    seconds: float
    history: list[float] = field(default_factory=list)
    #: NMSE on the test split (no choice looks at it); nan when there was no test split
    nmse_test: float = float("nan")
    n_test: int = 0
    #: for a "best" choice: kind -> that candidate's report (as a dict)
    candidates: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def nmse_heldout(self) -> float:
        """The held-out NMSE to report: test split when there is one, else validation."""
        return self.nmse_test if self.n_test else self.nmse_val

    @property
    def floor_ratio(self) -> float:
        """Held-out NMSE in units of the noise floor (1 = as good as a perfect twin)."""
        return self.nmse_heldout / self.noise_floor if self.noise_floor > 0 else float("inf")

    def __str__(self) -> str:
        split = f"test {self.n_test}" if self.n_test else f"val {self.n_val}"
        out = (f"twin {self.kind}: held-out NMSE {self.nmse_heldout:.4g} = {self.floor_ratio:.2f}x the noise floor "
               f"{self.noise_floor:.3g} (validation {self.nmse_val:.4g}, train {self.nmse_train:.4g}, "
               f"before fit {self.nmse_before:.4g}); {self.n_train} train / {split} samples, {self.epochs} epochs, "
               f"{self.seconds:.1f} s")
        if self.candidates:
            rows = [f"  {k:9s} validation {c['nmse_val']:.4g}  held-out {c['nmse_test']:.4g}  ({c['seconds']:.0f} s)"
                    for k, c in self.candidates.items()]
            out += "\ncandidates (lowest validation NMSE chosen):\n" + "\n".join(rows)
        return out


def _tensors(d: TwinData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.from_numpy(d.x), torch.from_numpy(d.theta), torch.from_numpy(d.y)


@torch.no_grad()
def nmse(twin: Twin | Callable, data: TwinData, chunk: int = 2048) -> float:
    """Normalised mean squared error of ``twin`` on ``data``."""
    x, th, y = _tensors(data)
    se = 0.0
    for i in range(0, len(data), chunk):
        se += float(((twin(x[i:i + chunk], th[i:i + chunk]) - y[i:i + chunk]) ** 2).sum())
    var = float(((y - y.mean(0)) ** 2).sum())
    return se / max(var, 1e-30)


def split3(data: TwinData, val_frac: float = 0.2, test_frac: float = 0.1,
           seed: int = 0) -> tuple[TwinData, TwinData, TwinData | None]:
    """Train / validation / test split by measurement group (validation = ``data.split(val_frac, seed)[1]``;
    the test split, a ``test_frac`` share of all data, comes out of the rest; ``None`` when 0)."""
    rest, val = data.split(val_frac, seed)
    if not test_frac or len(np.unique(rest.group)) < 3:
        return rest, val, None
    train, test = rest.split(test_frac / max(1e-9, 1 - val_frac), seed + 7919)
    return train, val, test


def fit_twin(twin: Twin, data: TwinData, epochs: int = 60, lr: float | None = None, batch: int = 256,
             val_frac: float = 0.2, seed: int = 0, patience: int | None = None,
             progress: Callable[[int, float], None] | None = None, test_frac: float = 0.1,
             max_train: int | None = None) -> TwinReport:
    """Fit ``twin`` on ``data`` (Adam, one-cycle schedule run to its end, MSE on standardised outputs), keep
    the state with the lowest validation NMSE, and return a :class:`TwinReport` with the test-split NMSE.
    A twin without trainable parameters is only evaluated. Small data sets use smaller batches (at least 8
    steps per epoch). ``max_train`` fits on the first that many training rows only (the splits stay the
    same, so twins fitted on less data are compared on the same validation and test rows)."""
    t0 = time.perf_counter()
    train, val, test = split3(data, val_frac, test_frac, seed)
    if max_train is not None and len(train) > max_train:
        keep = np.zeros(len(train), bool)
        keep[: int(max_train)] = True
        train = train.subset(keep)
    batch = max(1, min(int(batch), max(16, len(train) // 8)))
    x, th, y = _tensors(train)
    twin.prepare(x, th, y)
    before = nmse(twin, val)
    history: list[float] = []
    ran = 0
    # a twin with a frozen, expensive part (the residual twin's physics) computes it once per row
    cached = getattr(twin, "cached_part", None)
    aux = cached(x, th) if cached is not None else None
    val_aux = cached(*_tensors(val)[:2]) if cached is not None else None

    def val_nmse() -> float:
        if aux is None:
            return nmse(twin, val)
        with torch.no_grad():
            xv, tv, yv = _tensors(val)
            return float(((twin.forward_cached(xv, tv, val_aux) - yv) ** 2).sum() / ((yv - yv.mean(0)) ** 2).sum())

    if twin.trainable and epochs > 0:
        g = torch.Generator().manual_seed(seed)
        w = 1.0 / y.std(0).clamp(min=1e-6)            # standardise each output in the loss
        opt = torch.optim.Adam(twin.param_groups(lr or twin.default_lr))
        steps = epochs * math.ceil(len(train) / batch)
        if steps >= 4:  # OneCycleLR needs a warm-up and a decay phase of more than one step each
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[gr["lr"] for gr in opt.param_groups],
                                                        total_steps=steps, pct_start=min(0.5, max(0.1, 1.5 / steps)))
        else:           # a handful of steps: constant learning rate
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        best, best_state, stale = before, {k: v.clone() for k, v in twin.state_dict().items()}, 0
        for ep in range(epochs):
            twin.train()
            perm = torch.randperm(len(train), generator=g)
            for i in range(0, len(train), batch):
                idx = perm[i:i + batch]
                out = twin(x[idx], th[idx]) if aux is None else twin.forward_cached(x[idx], th[idx], aux[idx])
                loss = ((out - y[idx]) * w) ** 2
                loss = loss.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            twin.eval()
            v = val_nmse()
            history.append(v)
            ran = ep + 1
            if progress:
                progress(ep, v)
            if v < best:
                best, stale = v, 0
                best_state = {k: t.clone() for k, t in twin.state_dict().items()}
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    break
        twin.load_state_dict(best_state)
    twin.eval()
    return TwinReport(kind=twin.kind, nmse_before=before, nmse_train=nmse(twin, train), nmse_val=nmse(twin, val),
                      noise_floor=data.noise_floor, n_train=len(train), n_val=len(val), epochs=ran,
                      seconds=time.perf_counter() - t0, history=history,
                      nmse_test=nmse(twin, test) if test is not None else float("nan"),
                      n_test=len(test) if test is not None else 0)


def evaluate_twin(twin: Twin, data: TwinData) -> TwinReport:
    """Report of an already-built twin on ``data`` (all of it held out; nothing is fitted)."""
    t0 = time.perf_counter()
    e = nmse(twin, data)
    return TwinReport(kind=getattr(twin, "kind", "twin"), nmse_before=e, nmse_train=float("nan"), nmse_val=e,
                      noise_floor=data.noise_floor, n_train=0, n_val=len(data), epochs=0,
                      seconds=time.perf_counter() - t0)


__all__ = ["TwinReport", "evaluate_twin", "fit_twin", "nmse", "split3"]
