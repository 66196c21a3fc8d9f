"""Online twin refresh: periodic refits on the replay buffer and drift detection on the twin's error.

Every measurement PAT makes is a free twin-training sample ``(x, θ, y_phys)``. Before a new batch enters the
replay buffer, the twin predicts it; its normalised error

    e_t = mean ||f_m(x, θ) - y||² / v,        v = per-output variance of y in the refit window (mean over outputs)

is folded into an exponential moving average ``ē_t = (1 - α) ē_{t-1} + α e_t``. Right after a refit the
held-out NMSE ``e_0`` of the fit is the baseline. The twin is refit on the newest ``window`` triples when

* ``every`` steps have passed since the last refit (periodic), or
* ``ē_t > drift_factor · max(e_0, floor)`` and at least ``min_gap`` steps have passed (drift detected).

``v`` is fixed from the first ``min_samples`` replayed measurements and updated at each refit.
``RefreshConfig.frozen()`` tracks the error but never refits (the frozen-twin baseline).

A refit warm-starts from the current twin (``pat_runtime.twins.fit_twin``: Adam, held-out split by measurement
batch, best held-out state kept), so a refit that does not help leaves the twin as it was.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .replay import ReplayBuffer

log = logging.getLogger(__name__)


@dataclass
class RefreshConfig:
    every: int = 100             # periodic refit interval in steps (0: only on drift)
    window: int = 2048           # newest replay triples used per refit
    epochs: int = 8
    lr: float | None = None      # default: the twin family's default_lr
    batch: int = 256
    min_samples: int = 256       # no refit before the buffer holds this many triples
    drift_factor: float = 2.0    # refit early when the error EMA exceeds this times the baseline
    floor: float = 1e-3          # baseline floor (a near-perfect twin must not trigger on noise)
    ema: float = 0.1
    min_gap: int = 50            # steps between two refits at least

    @staticmethod
    def frozen() -> "RefreshConfig":
        """Watch the twin's error but never refit."""
        return RefreshConfig(every=0, drift_factor=float("inf"))


class TwinRefresher:
    """Watches the twin's error on fresh measurements and refits it from the replay buffer."""

    def __init__(self, twin: torch.nn.Module, replay: ReplayBuffer, config: RefreshConfig | None = None):
        self.twin = twin
        self.replay = replay
        self.cfg = config or RefreshConfig()
        self.err_ema: float | None = None
        self.baseline: float | None = None
        self.y_var: float | None = None
        self.last_refit = 0
        self.refits = 0
        self.drift_events = 0
        self.last_report: dict[str, Any] | None = None

    @torch.no_grad()
    def observe(self, x: np.ndarray, theta: np.ndarray, y: np.ndarray) -> float:
        """Score the twin on one fresh measurement batch (call before it goes into the replay buffer)."""
        pred = self.twin(torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(theta, np.float32)))
        yt = torch.from_numpy(np.asarray(y, np.float32))
        if self.y_var is None and len(self.replay) >= self.cfg.min_samples:  # fixed scale from the first data
            self.y_var = max(float(self.replay.arrays()[2].var(axis=0).mean()), 1e-12)
        var = self.y_var if self.y_var else max(float(yt.var(0, unbiased=False).mean()), 1e-12)
        e = float(((pred - yt) ** 2).mean()) / var
        a = self.cfg.ema
        self.err_ema = e if self.err_ema is None else (1 - a) * self.err_ema + a * e
        return e

    def due(self, step: int) -> str | None:
        """``"periodic"``, ``"drift"`` or None."""
        c = self.cfg
        if c.every == 0 and c.drift_factor == float("inf"):
            return None
        if len(self.replay) < c.min_samples or step - self.last_refit < c.min_gap:
            return None
        if (self.baseline is not None and self.err_ema is not None
                and self.err_ema > c.drift_factor * max(self.baseline, c.floor)):
            return "drift"
        if c.every and step - self.last_refit >= c.every:
            return "periodic"
        return None

    def refit(self, step: int, reason: str = "periodic") -> dict[str, Any]:
        """Fit the twin on the newest ``window`` triples (blocking; see :meth:`arefit`)."""
        from pat_runtime.twins import fit_twin

        data = self.replay.twin_data(self.cfg.window)
        report = fit_twin(self.twin, data, epochs=self.cfg.epochs, lr=self.cfg.lr, batch=self.cfg.batch,
                          seed=step, patience=None)
        self.y_var = max(float(data.y.var(axis=0).mean()), 1e-12)
        self.baseline = float(report.nmse_val)
        self.err_ema = self.baseline
        self.last_refit = step
        self.refits += 1
        if reason == "drift":
            self.drift_events += 1
        self.last_report = {"step": step, "reason": reason, "nmse_before": float(report.nmse_before),
                            "nmse_val": float(report.nmse_val), "n": len(data), "seconds": float(report.seconds)}
        log.info("twin refit at step %d (%s): held-out NMSE %.4g -> %.4g on %d samples", step, reason,
                 report.nmse_before, report.nmse_val, len(data))
        return self.last_report

    async def arefit(self, step: int, reason: str = "periodic") -> dict[str, Any]:
        """:meth:`refit` in a worker thread so the event loop (MQTT keepalives, sources) stays responsive."""
        return await asyncio.to_thread(self.refit, step, reason)

    def state_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.cfg), "err_ema": self.err_ema, "baseline": self.baseline, "y_var": self.y_var,
                "last_refit": self.last_refit, "refits": self.refits, "drift_events": self.drift_events,
                "last_report": self.last_report}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        for k in ("err_ema", "baseline", "y_var", "last_refit", "refits", "drift_events", "last_report"):
            setattr(self, k, st.get(k, getattr(self, k)))
