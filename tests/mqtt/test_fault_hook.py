"""The one edge fault hook (``EdgeTransport.faults``) on the MQTT edge: a lost reply is recovered by the
coordinator's retry (same id) and the device runs once; a crashed hook silences the node."""
from __future__ import annotations

import numpy as np

from pat_runtime.testing import DropReplies, wait_until


async def test_lost_reply_retried_and_applied_once(broker, edge_node, coordinator):
    drops = DropReplies(1)
    async with coordinator(broker.url, timeout=0.5, retries=2, liveness=1.0) as coord, \
            edge_node(broker.url, "node-1", faults=drops) as node:
        await coord.wait_for_node("node-1", timeout=10)
        x = np.full((2, 16), 0.25, np.float32)
        hdr, (y,) = await coord.request("node-1", "apply", [x, np.zeros(16, np.float32)])
        assert hdr["ok"] and drops.dropped_ids == [hdr["id"]]
        assert node.device.calls == 1 and node.service.counters["duplicates"] == 1
        assert node.transport.counters["served"] == 1                    # the lost reply is not counted
        drops.crash()
        beats = node.transport.counters["heartbeats"]
        await wait_until(lambda: "node-1" not in coord.alive_nodes(), timeout=10)   # silent: no heartbeats
        assert node.transport.counters["heartbeats"] == beats
