"""Summary statistics for repeated runs: mean and Student-t confidence intervals.

A cell of ``pat results`` is ``n`` independent runs (seeds x hardware units). Its interval is the
two-sided t-interval over those runs::

    mean ± t_{1-α/2, n-1} · s / √n          (s: sample standard deviation, α = 1 - conf)

and a *paired* difference (e.g. PAT − in-silico on the same seed, unit and twin) is the t-interval of the
per-pair differences, which removes the between-pair variance both methods share.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy import stats as _st


@dataclass(frozen=True)
class Interval:
    """``mean`` with a ``conf`` t-interval ``[lo, hi]`` over ``n`` values (``sd`` = sample std)."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    conf: float = 0.95

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def fmt(self, scale: float = 100.0, digits: int = 1, sign: bool = False) -> str:
        """``"88.2 [85.1, 91.3]"`` (values times ``scale``); ``"—"`` when empty."""
        if self.n == 0 or math.isnan(self.mean):
            return "—"
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        if self.n < 2:
            return f.format(scale * self.mean) + " (n=1)"
        return (f.format(scale * self.mean) + f" [{f.format(scale * self.lo)}, {f.format(scale * self.hi)}]")


def t_interval(values: Sequence[float], conf: float = 0.95) -> Interval:
    """Mean and two-sided Student-t interval of ``values`` (NaNs dropped; n < 2 gives a zero-width interval)."""
    if not 0 < conf < 1:
        raise ValueError(f"conf must be in (0, 1), got {conf}")
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, conf)
    m = math.fsum(v) / n
    if n == 1:
        return Interval(m, m, m, 1, 0.0, conf)
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in v) / (n - 1))
    half = float(_st.t.ppf(0.5 + conf / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(m, m - half, m + half, n, sd, conf)


def paired_difference(a: dict, b: dict, conf: float = 0.95) -> Interval:
    """t-interval of ``a[k] - b[k]`` over the keys present in both (e.g. ``(seed, unit)`` pairs)."""
    keys = [k for k in a if k in b]
    return t_interval([a[k] - b[k] for k in keys], conf)


__all__ = ["Interval", "paired_difference", "t_interval"]
