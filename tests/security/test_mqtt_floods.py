"""MQTT floods: the broker queue of a dead consumer is bounded by the generated config; fake ids expire."""
from __future__ import annotations

import aiomqtt

from pat_runtime import wire
from pat_runtime.testing.core import free_port
from pat_runtime.testing.mosquitto import mosquitto_broker
from pat_runtime.transport.mqtt import MqttCoordinator
from pat_runtime.transport.mqtt.acl import AclSpec, write_broker_config
from pat_runtime.testing import wait_until



async def test_mqtt_queue_of_a_dead_stream_consumer_is_bounded_by_the_generated_config(tmp_path):
    port = free_port()
    creds = write_broker_config(tmp_path, AclSpec(["node-1"], producers=["sensor"], streams=["lab/samples"]),
                                port=port, max_queued=100, passwords={"coordinator": "c-pw", "sensor": "s-pw"})
    assert creds
    async with mosquitto_broker(port=port, config=tmp_path / "mosquitto.conf"):
        def consumer():
            return aiomqtt.Client("127.0.0.1", port, username="coordinator", password="c-pw",
                                  identifier="stream-consumer", clean_session=False)

        async with consumer() as c:  # a persistent session that then goes away (a dead `pat stream`)
            await c.subscribe("lab/samples", qos=1)
        async with aiomqtt.Client("127.0.0.1", port, username="sensor", password="s-pw") as sensor:
            for i in range(1000):
                await sensor.publish("lab/samples", str(i).encode(), qos=1)
            got: list[bytes] = []
            async with consumer() as c:
                await sensor.publish("lab/samples", b"marker", qos=1)  # queued after everything kept
                async for m in c.messages:
                    got.append(bytes(m.payload))
                    if m.payload == b"marker":
                        break
    # before (max_queued_messages 0): all 1000 kept in broker memory; now at most the configured 100
    assert 0 < len(got) - 1 <= 100


async def test_mqtt_status_and_hello_of_ids_that_never_join_are_bounded_and_expire(tmp_path):
    async with mosquitto_broker() as b:  # anonymous broker: the worst case (no ACL)
        coord = MqttCoordinator(b.url, liveness=0.5)
        coord.max_nodes, coord.forget_after = 50, 1e9
        await coord.start()
        try:
            async with aiomqtt.Client("127.0.0.1", b.port) as evil:
                for i in range(300):
                    await evil.publish(f"pat/fake-{i}/status", f"online s{i}".encode(), qos=1)
                    await evil.publish(f"pat/fake-{i}/hello", wire.pack(wire.make_header("hello", node=f"fake-{i}")),
                                       qos=1)
                await wait_until(lambda: coord.stats.recv_msgs >= 600)
            assert all(n <= 50 for n in coord.tracked().values())
            assert coord.stats.rejected >= 2 * 250 and coord.nodes == {}
            coord.forget_after = 0.2  # never-joined ids expire
            await wait_until(lambda: not any(coord.tracked().values()))
        finally:
            await coord.close()
