"""Timeouts and retries: a retry reuses the request id, so the device is applied exactly once."""
import asyncio

import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceTimeoutError
from pat_runtime.testing import free_port, sim_device
from pat_runtime.testing.zmq import LossyEdgeTransport, start_node
from pat_runtime.transport.zmq import ZmqCoordinator
from pat_runtime.testing import wait_until


async def _setup(transport_factory, **coord_kw):
    url = f"tcp://127.0.0.1:{free_port()}"
    coord = await ZmqCoordinator(url, **coord_kw).start()
    dev = await sim_device("circuit", noise=0.0)
    node = await start_node(dev, url, "n1", transport=transport_factory(url))
    await coord.wait_for_node("n1", timeout=5)
    return coord, dev, node


async def test_dropped_reply_is_retried_with_same_id_and_applied_once():
    lossy = None

    def factory(url):
        nonlocal lossy
        lossy = LossyEdgeTransport(url, "n1", heartbeat=0.1, drop_replies=1)
        return lossy

    coord, dev, node = await _setup(factory, timeout=0.3, retries=2)
    try:
        x = np.full((4, 16), 0.25, np.float32)
        th = np.zeros(16, np.float32)
        hdr, (y,) = await coord.request("n1", "apply", [x, th])
        assert hdr["ok"] and lossy.dropped_ids == [hdr["id"]]  # the reply we got answers the dropped id
        np.testing.assert_array_equal(y, dev.sim.measure(x, th))
        assert dev.calls == 1  # the retry was answered from the node's reply cache
        svc = node.service
        assert svc.counters["duplicates"] == 1 and svc.counters["requests"] == 2
        assert coord.stats.retries == 1 and coord.stats.timeouts == 0
    finally:
        await node.stop()
        await coord.close()


async def test_retry_while_first_attempt_still_running_drives_device_once():
    from pat_runtime.transport.zmq import ZmqEdgeTransport

    coord, dev, node = await _setup(lambda url: ZmqEdgeTransport(url, "n1", heartbeat=0.1), timeout=0.1, retries=5)
    dev.sim.latency = 0.35  # slower than 3 attempts: duplicates arrive while the first is in flight
    try:
        x = np.zeros((2, 16), np.float32)
        _, (y,) = await coord.request("n1", "apply", [x, np.zeros(16, np.float32)])
        assert y.shape == (2, 16)
        assert dev.calls == 1 and coord.stats.retries >= 2
        assert node.service.counters["duplicates"] == coord.stats.retries
        await wait_until(lambda: coord.stats.unmatched >= 1)  # the duplicates' replies arrive late and are ignored
    finally:
        await node.stop()
        await coord.close()


async def test_timeout_after_retries_names_the_node():
    lossy_all = lambda url: LossyEdgeTransport(url, "n1", heartbeat=0.1, drop_replies=100, types=("apply",))
    coord, dev, node = await _setup(lossy_all)
    try:
        x = [np.zeros((1, 16), np.float32), np.zeros(16, np.float32)]
        with pytest.raises(DeviceTimeoutError, match=r"\[n1\].*apply.*3 attempt"):
            await coord.request("n1", "apply", x, timeout=0.1, retries=2)
        assert coord.stats.timeouts == 1 and coord.stats.retries == 2
        assert node.service.counters["requests"] == 3 and node.service.counters["duplicates"] == 2
        assert dev.calls == 1
        hdr, _ = await coord.request("n1", "spec", timeout=1)  # the node and coordinator are fine
        assert hdr["spec"]["kind"] == "sim:circuit"
    finally:
        await node.stop()
        await coord.close()


async def test_cancelled_request_leaves_nothing_pending():
    from pat_runtime.transport.zmq import ZmqEdgeTransport

    coord, dev, node = await _setup(lambda url: ZmqEdgeTransport(url, "n1", heartbeat=0.1))
    dev.sim.latency = 0.3
    try:
        sent = coord.stats.sent_msgs
        t = asyncio.create_task(coord.request("n1", "apply", [np.zeros((1, 16), np.float32), np.zeros(16, np.float32)]))
        await wait_until(lambda: coord.stats.sent_msgs > sent)   # sent: the node runs it (0.3 s latency)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert coord.pending_ids() == []
        await wait_until(lambda: coord.stats.unmatched >= 1)  # its reply arrives late and is counted, not crashed on
        assert coord.stats.unmatched == 1 and dev.calls == 1
    finally:
        await node.stop()
        await coord.close()
