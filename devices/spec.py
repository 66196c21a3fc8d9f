"""Device specifications: dimensions, safe ranges and units."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import OutOfRangeError, ShapeError


@dataclass(frozen=True)
class DeviceSpec:
    """What a physical device takes and returns.

    ``apply(x[B, in_dim], theta[param_dim]) -> y[B, out_dim]``. Inputs must lie in ``x_range`` and
    parameters in ``theta_range`` (the device's safe operating range, in physical units); anything outside
    raises :class:`OutOfRangeError` before it reaches the hardware.
    """

    kind: str
    in_dim: int
    param_dim: int
    out_dim: int
    x_range: tuple[float, float] = (-1.0, 1.0)
    theta_range: tuple[float, float] = (-1.0, 1.0)
    y_range: tuple[float, float] | None = None
    x_units: str = "V"
    theta_units: str = "V"
    y_units: str = "a.u."
    max_batch: int = 4096
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("in_dim", "param_dim", "out_dim", "max_batch"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"DeviceSpec.{name} must be positive, got {getattr(self, name)}")
        for name in ("x_range", "theta_range"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"DeviceSpec.{name} must be (low, high) with low < high, got {(lo, hi)}")
            object.__setattr__(self, name, (float(lo), float(hi)))
        if self.y_range is not None:
            object.__setattr__(self, "y_range", (float(self.y_range[0]), float(self.y_range[1])))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["x_range"] = list(self.x_range)
        d["theta_range"] = list(self.theta_range)
        d["y_range"] = list(self.y_range) if self.y_range is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeviceSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"DeviceSpec: unknown fields {sorted(unknown)}")
        d = dict(d)
        for k in ("x_range", "theta_range", "y_range"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def validate(self, x: np.ndarray, theta: np.ndarray, device: str = "device") -> None:
        """Check shapes, finiteness and safe ranges; raise a clear error naming ``device``."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ShapeError(device, f"x must have shape [B, {self.in_dim}], got {list(x.shape)}")
        if x.shape[0] == 0:
            raise ShapeError(device, "x is an empty batch")
        if x.shape[0] > self.max_batch:
            raise ShapeError(device, f"batch of {x.shape[0]} exceeds max_batch={self.max_batch}")
        if theta.ndim != 1 or theta.shape[0] != self.param_dim:
            raise ShapeError(device, f"theta must have shape [{self.param_dim}], got {list(theta.shape)}")
        _check_range(device, "x", x, self.x_range, self.x_units)
        _check_range(device, "theta", theta, self.theta_range, self.theta_units)

    def validate_many(self, xs: np.ndarray, thetas: np.ndarray, device: str = "device") -> None:
        """:meth:`validate` for every channel ``c`` of ``xs[C, B, in]``, ``thetas[C, P]`` in one pass over all
        channels; an error names the failing channel (``device[c]``)."""
        if (xs.ndim == 3 and thetas.ndim == 2 and xs.shape[0] == thetas.shape[0] and xs.shape[2] == self.in_dim
                and 0 < xs.shape[1] <= self.max_batch and thetas.shape[1] == self.param_dim):
            try:
                _check_range(device, "x", xs, self.x_range, self.x_units)
                _check_range(device, "theta", thetas, self.theta_range, self.theta_units)
                return
            except OutOfRangeError:
                pass  # find the channel below
        for c in range(xs.shape[0]):
            self.validate(xs[c], thetas[c], f"{device}[{c}]")

    def clip_x(self, x):
        return x.clip(*self.x_range)

    def clip_theta(self, theta):
        return theta.clip(*self.theta_range)


def _check_range(device: str, name: str, a: np.ndarray, rng: tuple[float, float], units: str) -> None:
    # two reductions, no temporary: a NaN anywhere makes min and max NaN, an inf shows up in one of them
    amin, amax = float(a.min()), float(a.max())
    if not (math.isfinite(amin) and math.isfinite(amax)):
        raise OutOfRangeError(device, f"{name} contains NaN or inf")
    lo, hi = rng
    # a tiny tolerance so float32 round-trips of boundary values are accepted
    tol = 1e-6 * max(1.0, hi - lo)
    if amin < lo - tol or amax > hi + tol:
        raise OutOfRangeError(
            device,
            f"{name} outside the safe range [{lo}, {hi}] {units}: min={amin:.6g}, max={amax:.6g}",
        )
