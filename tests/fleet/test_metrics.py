import math

import numpy as np
import pytest

from pat_runtime.fleet.metrics import FleetMetrics, LatencyHistogram, NodeMetrics


def test_histogram_quantiles_within_one_bucket():
    rng = np.random.default_rng(0)
    lat = rng.lognormal(mean=np.log(0.01), sigma=0.5, size=5000)
    h = LatencyHistogram()
    for v in lat:
        h.record(v)
    width = 2 ** (1 / h.per_octave)            # one bucket, relative
    for q in (0.1, 0.5, 0.9, 0.99):
        exact = np.quantile(lat, q)
        assert exact / width <= h.quantile(q) <= exact * width
    assert h.count == 5000 and h.mean == pytest.approx(lat.mean())
    assert h.quantile(0) == pytest.approx(lat.min()) and h.quantile(1) == pytest.approx(lat.max())


def test_histogram_merge_and_empty():
    a, b = LatencyHistogram(), LatencyHistogram()
    assert math.isnan(a.quantile(0.5)) and math.isnan(a.mean)
    for v in (0.001, 0.002):
        a.record(v)
    b.record(0.5)
    a.merge(b)
    assert a.count == 3 and a.max == 0.5 and a.min == 0.001
    with pytest.raises(ValueError):
        a.merge(LatencyHistogram(per_octave=4))
    with pytest.raises(ValueError):
        a.quantile(1.5)


def test_busy_time_is_union_of_inflight_intervals():
    m = NodeMetrics("n")
    t1 = m.begin(now=0.0)           # [0, 3] one request
    t2 = m.begin(now=1.0)           # [1, 2] overlaps: busy time counts the union
    m.end(t2, "ok", samples=4, now=2.0)
    m.end(t1, "timeout", now=3.0)
    t3 = m.begin(now=5.0)
    m.end(t3, "ok", samples=2, now=6.0)
    assert m.busy == pytest.approx(4.0)
    assert (m.requests, m.ok, m.timeouts, m.samples) == (3, 2, 1, 6)
    assert m.latency.count == 2


def test_fleet_utilization_and_table():
    fm = FleetMetrics()
    fm.started = 0.0
    a, b = fm.node("a"), fm.node("b")
    a.end(a.begin(now=0.0), "ok", samples=10, now=8.0)
    b.end(b.begin(now=0.0), "ok", samples=10, now=2.0)
    fm.node("idle")                                  # never used: not counted
    wall = fm.wall()
    assert fm.utilization("a") == pytest.approx(8.0 / wall)
    assert fm.utilization() == pytest.approx(5.0 / wall)
    s = fm.summary()
    assert s["nodes"] == 2 and s["samples"] == 20 and s["ok"] == 2
    table = fm.table()
    assert "a " in table and "idle" not in table and "utilization" in table
