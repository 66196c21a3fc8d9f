"""t-intervals over runs and paired differences (pat_runtime.stats)."""
from __future__ import annotations

import math

import pytest

from pat_runtime.stats import paired_difference, t_interval


def test_t_interval_matches_the_textbook_value():
    iv = t_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, s = sqrt(5/3), t_{0.975, 3} = 3.182446...
    half = 3.1824463052842638 * math.sqrt(5 / 3) / 2
    assert iv.mean == pytest.approx(2.5) and iv.n == 4 and iv.sd == pytest.approx(math.sqrt(5 / 3))
    assert (iv.lo, iv.hi) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    assert iv.half == pytest.approx(half)
    wider = t_interval([1.0, 2.0, 3.0, 4.0], conf=0.99)
    assert wider.lo < iv.lo and wider.hi > iv.hi


def test_degenerate_inputs():
    one = t_interval([0.7])
    assert (one.mean, one.lo, one.hi, one.n) == (0.7, 0.7, 0.7, 1) and one.fmt().endswith("(n=1)")
    empty = t_interval([None, float("nan")])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.fmt() == "—"
    with pytest.raises(ValueError, match="conf"):
        t_interval([1, 2], conf=1.5)


def test_fmt_is_percent_with_interval():
    assert t_interval([0.8, 0.9]).fmt().startswith("85.0 [")
    assert t_interval([0.05, 0.07]).fmt(sign=True).startswith("+6.0 [")


def test_paired_difference_removes_shared_variance():
    a = {(0, 0): 0.90, (1, 0): 0.70, (2, 1): 0.80, (3, 1): 0.60}
    b = {(0, 0): 0.80, (1, 0): 0.61, (2, 1): 0.70, (3, 1): 0.49, (9, 9): 0.0}   # (9, 9) has no partner
    d = paired_difference(a, b)
    assert d.n == 4 and d.mean == pytest.approx(0.1)
    unpaired = t_interval(list(a.values())).half + t_interval([b[k] for k in a]).half
    assert d.half < unpaired / 5 and d.lo > 0
