"""Bounded replay buffer of physical measurements ``(x, theta, y_phys)`` for online twin refits.

A fixed-capacity ring buffer (FIFO): once full, each new triple overwrites the oldest one, so the buffer
always holds the most recent ``capacity`` measurements -- what a twin should fit while the device drifts.
Memory is allocated once: ``capacity * (in_dim + param_dim + out_dim) * 4`` bytes.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class ReplayBuffer:
    """FIFO ring buffer of ``(x[in_dim], theta[param_dim], y[out_dim])`` float32 triples."""

    def __init__(self, capacity: int, in_dim: int, param_dim: int, out_dim: int):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.x = np.zeros((capacity, in_dim), np.float32)
        self.theta = np.zeros((capacity, param_dim), np.float32)
        self.y = np.zeros((capacity, out_dim), np.float32)
        self.group = np.zeros(capacity, np.int64)   # which add() (measurement batch) a row came from
        self.batches = 0
        self.size = 0
        self.head = 0          # next slot to write
        self.total = 0         # triples ever added

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.theta.nbytes + self.y.nbytes + self.group.nbytes

    def add(self, x: Any, theta: Any, y: Any) -> None:
        """Add a batch: ``x[B, in]``, ``theta[P]`` (shared) or ``[B, P]``, ``y[B, out]``."""
        x, y = _np(x), _np(y)
        theta = _np(theta)
        if x.ndim == 1:
            x, y = x[None], y[None]
        b = x.shape[0]
        if theta.ndim == 1:
            theta = np.broadcast_to(theta, (b, theta.shape[0]))
        if y.shape[0] != b or theta.shape[0] != b:
            raise ValueError(f"batch sizes differ: x {x.shape}, theta {theta.shape}, y {y.shape}")
        if b > self.capacity:  # only the newest `capacity` rows survive anyway
            x, theta, y = x[-self.capacity:], theta[-self.capacity:], y[-self.capacity:]
            self.total += b - self.capacity
            b = self.capacity
        idx = (self.head + np.arange(b)) % self.capacity
        self.x[idx], self.theta[idx], self.y[idx] = x, theta, y
        self.group[idx] = self.batches
        self.batches += 1
        self.head = int((self.head + b) % self.capacity)
        self.size = min(self.capacity, self.size + b)
        self.total += b

    def _order(self) -> np.ndarray:
        """Slot indices from oldest to newest."""
        start = (self.head - self.size) % self.capacity
        return (start + np.arange(self.size)) % self.capacity

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored triples, oldest first (copies)."""
        o = self._order()
        return self.x[o], self.theta[o], self.y[o]

    def recent(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The newest ``n`` triples, oldest first."""
        o = self._order()[-int(n):] if n > 0 else np.zeros(0, np.int64)
        return self.x[o], self.theta[o], self.y[o]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` triples drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("replay buffer is empty")
        o = self._order()[rng.integers(0, self.size, int(n))]
        return self.x[o], self.theta[o], self.y[o]

    def twin_data(self, n: int | None = None):
        """The newest ``n`` (default: all) triples as :class:`pat_runtime.twins.TwinData` for ``fit_twin``."""
        from pat_runtime.twins import TwinData

        o = self._order()
        if n is not None:
            o = o[-int(n):]
        y = self.y[o]
        return TwinData(self.x[o], self.theta[o], y, y[None].copy(), self.group[o])

    def state_dict(self) -> dict[str, Any]:
        o = self._order()
        return {"capacity": self.capacity, "total": self.total, "batches": self.batches,
                "x": self.x[o], "theta": self.theta[o], "y": self.y[o], "group": self.group[o]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        x, t, y = (np.asarray(state[k], np.float32) for k in ("x", "theta", "y"))
        if x.shape[1:] != self.x.shape[1:] or t.shape[1:] != self.theta.shape[1:] or y.shape[1:] != self.y.shape[1:]:
            raise ValueError("replay state has different dimensions than this buffer")
        n = min(len(x), self.capacity)
        x, t, y = x[len(x) - n:], t[len(t) - n:], y[len(y) - n:]
        g = np.asarray(state.get("group", np.zeros(len(x))), np.int64)[-n:] if n else np.zeros(0, np.int64)
        self.x[:n], self.theta[:n], self.y[:n], self.group[:n] = x, t, y, g
        self.size = n
        self.head = n % self.capacity
        self.total = int(state.get("total", n))
        self.batches = int(state.get("batches", int(g.max()) + 1 if n else 0))


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, np.float32)
