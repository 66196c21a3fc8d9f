"""Prometheus metrics (coordinator-side device and edge-side service), the edge's status lines, fleet
failure/fault summaries, stream resume refusal, and the synchronous facade inside a running loop."""
from __future__ import annotations

import asyncio
import urllib.request

import numpy as np
import pytest

from pat_runtime.devices.factory import make_device
from pat_runtime.metrics_prom import PromMetrics
from pat_runtime.testing import wait_until


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_device_metrics_count_calls_latency_and_errors_by_code():
    m = PromMetrics()
    port = m.serve(0)
    try:
        dev = m.instrument_device(make_device("sim:plate?noise=0"))
        await dev.connect()
        for _ in range(3):
            await dev.apply(np.zeros((2, 32), np.float32), np.zeros(32, np.float32))

        async def boom(x, theta):
            from pat_runtime.devices.errors import DeviceTimeoutError
            raise DeviceTimeoutError(dev.name, "no answer")

        m2 = PromMetrics()
        dev2 = make_device("sim:plate")
        dev2._apply = boom
        m2.instrument_device(dev2)
        await dev2.connect()
        with pytest.raises(TimeoutError):
            await dev2.apply(np.zeros((1, 32), np.float32), np.zeros(32, np.float32))
        text = _scrape(port)
        assert _value(text, 'pat_requests_total{type="apply"}') == 3
        assert _value(text, "pat_request_seconds_count") == 3
        assert _value(text, "pat_inflight_requests") == 0
        assert _value(text, "pat_nodes") == 1
        assert m2.registry.get_sample_value("pat_errors_total", {"code": "timeout"}) == 1
    finally:
        m.close()


async def test_edge_plugin_counts_requests_and_wire_error_codes():
    from pat_runtime.edge.service import NodeService
    from pat_runtime.wire import make_header

    dev = make_device("sim:plate")
    await dev.connect()
    svc = NodeService(dev, "n1")
    m = PromMetrics()
    m.edge_plugin(svc)
    x, th = np.zeros((2, 32), np.float32), np.zeros(32, np.float32)
    await svc.handle(make_header("apply", id="a"), [x, th])
    await svc.handle(make_header("apply", id="b"), [x, th + 5])       # out of range: an error reply
    await svc.handle(make_header("nosuch", id="c"), [])
    sample = m.registry.get_sample_value
    assert sample("pat_requests_total", {"type": "apply"}) == 2
    assert sample("pat_errors_total", {"code": "out_of_range"}) == 1
    assert sample("pat_errors_total", {"code": "unknown_type"}) == 1
    assert sample("pat_nodes") == 1


async def test_edge_status_says_what_it_serves_and_when_nobody_talks_to_it():
    from pat_runtime.edge.service import NodeService
    from pat_runtime.edge.status import EdgeStatus

    lines: list[str] = []
    dev = make_device("sim:plate")
    await dev.connect()
    svc = NodeService(dev, "plate1")
    st = EdgeStatus("plate1", "tcp://127.0.0.1:1", echo=lines.append, quiet=0.2)
    st(svc)
    try:
        assert "serving sim:plate#0 (sim:plate: x[32] in [-1.0, 1.0] V" in lines[0]
        assert "connecting to the coordinator at tcp://127.0.0.1:1" in lines[1]
        await wait_until(lambda: any("no request for" in ln for ln in lines), what="the idle notice")
        svc.counters["requests"] += 1
        await wait_until(lambda: any("coordinator connected" in ln for ln in lines), what="the connected notice")
    finally:
        st.close()


async def test_edge_status_backs_off_while_nobody_talks_to_it():
    """A silent edge reports after quiet, 2 quiet, 4 quiet, ... seconds (at most every 64 quiet), not every poll."""
    from pat_runtime.edge.service import NodeService
    from pat_runtime.edge.status import EdgeStatus
    from pat_runtime.testing import wait_until

    now = [0.0]
    lines: list[str] = []
    dev = make_device("sim:plate")
    await dev.connect()
    st = EdgeStatus("plate1", "tcp://127.0.0.1:1", echo=lines.append, quiet=10.0, poll=0.001, clock=lambda: now[0])
    st(NodeService(dev, "plate1"))
    try:
        for t in range(0, 3000, 5):       # 50 simulated minutes of silence, one poll every 5 s
            now[0] = float(t)
            k = st.polls
            await wait_until(lambda: st.polls > k)
        quiet = [ln for ln in lines if "no request for" in ln]
        # reports at 10, 30, 70, 150, 310, 630, then every 640 s: 10 in 3000 s (one per poll would be 598)
        assert 8 <= len(quiet) <= 11, quiet
    finally:
        st.close()


def test_fleet_failure_counts_and_readable_faults():
    from pat_runtime.fleet.report import failure_counts, format_failures, format_faults

    c = failure_counts({"timeouts": 1, "errors": 0}, {"timeouts": 146, "errors": 3}, {"crashes": 0},
                       {"crashes": 2}, shard_failures=4)
    assert c == {"shards_failed": 4, "request_timeouts": 145, "request_errors": 3, "node_crashes": 2}
    assert format_failures(c) == "failures: 4 shards failed, 145 request timeouts, 3 request errors, 2 node crashes"
    assert format_failures({"shards_failed": 0, "request_timeouts": 0}) == "failures none"
    assert format_faults({"dropped": 145, "crashes": 2, "restarts": 0, "applies": 900}) == \
        "faults injected: 145 replies dropped, 2 node crashes"


def test_stream_resume_with_another_source_is_refused(tmp_path):
    from pat_runtime.config import ConfigError
    from pat_runtime.stream.checkpoint import CheckpointManager
    from pat_runtime.stream.run_config import check_resume

    run = {"device": "sim:plate?drift=0.0015", "source": "sim-drift", "task": "digits", "layers": 2,
           "twin": "greybox"}
    check_resume(tmp_path, run)                       # a fresh dir: recorded
    CheckpointManager(tmp_path).save({"step": 1}, 1)
    check_resume(tmp_path, run)                       # the same stream: resumes
    other = {**run, "device": "sim:plate", "source": "mqtt://127.0.0.1:1883/lab/samples"}
    with pytest.raises(ConfigError, match="made with device='sim:plate\\?drift=0.0015'.*skip every sample"):
        check_resume(tmp_path, other)


async def test_sync_facade_works_inside_a_running_loop():
    import pat_runtime

    # a notebook cell: an event loop is running, and the synchronous call still completes
    twin, report = pat_runtime.twin("sim:plate?noise=0", "nominal", samples=64)
    assert report.kind == "nominal" and report.nmse_val >= 0
    assert pat_runtime.run_sync(asyncio.sleep(0, result=7)) == 7
