"""The same FleetManager and ShardScheduler over MQTT (through a Mosquitto broker)."""
import asyncio
from collections import Counter

import numpy as np
import pytest

from pat_runtime.edge.service import NodeService
from pat_runtime.fleet import FleetManager, Shard, ShardScheduler
from pat_runtime.testing import mosquitto_broker, require_mosquitto
from pat_runtime.transport.mqtt import MqttCoordinator, MqttEdgeTransport
from pat_runtime.fleet.simfleet import node_device

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(60)]


async def test_fleet_over_mqtt_reassigns_a_leaving_node():
    require_mosquitto()
    async with mosquitto_broker() as broker:
        async with MqttCoordinator(broker.url, timeout=0.5, retries=1, liveness=1.0) as coord:
            stops, tasks = [], []
            for i in range(3):
                dev = node_device("echo:?latency=0.005", i)
                await dev.connect()
                stop = asyncio.Event()
                edge = MqttEdgeTransport(broker.url, f"m{i}", heartbeat=0.1, max_concurrency=1)
                tasks.append(asyncio.create_task(edge.serve(NodeService(dev, f"m{i}"), stop)))
                stops.append(stop)
            try:
                async with FleetManager(coord, cap=2) as m:
                    await m.wait_for_nodes(3, timeout=10)
                    th = np.zeros(4, np.float32)
                    seen, done_by = Counter(), Counter()

                    async def work(node, shard):
                        return await m.apply(node, shard.payload, th)

                    def accept(shard, node, result):
                        seen[shard.id] += 1
                        done_by[node] += 1
                        if sum(seen.values()) == 10:
                            stops[0].set()            # m0 leaves (bye) mid-run

                    x = np.zeros((2, 4), np.float32)
                    res = await ShardScheduler(m).run([Shard(i, x) for i in range(60)], work, on_result=accept)
                    assert len(res) == 60 and set(seen.values()) == {1}
                    assert done_by["m1"] > 0 and done_by["m2"] > 0
                    m.refresh()
                    assert not m.is_available("m0")
                    assert m.metrics.node("m1").latency.count > 0
            finally:
                for s in stops:
                    s.set()
                await asyncio.gather(*tasks, return_exceptions=True)
