"""Deployment end to end over ZeroMQ and over MQTT (retained deploy topic)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from pat_runtime.edge.deployed import Deployment
from pat_runtime.artifact import loads, pnn_from_artifact
from pat_runtime.deployer import (DeployError, Target, deploy_mqtt, deploy_via, infer_via, node_status_mqtt,
                              rollback_mqtt, rollback_via, run_on_target)
from pat_runtime.testing import free_port, sim_device, wait_until
from pat_runtime.testing.deploy import pnn_artifact
from pat_runtime.testing.zmq import start_node
from pat_runtime.wire import make_header, pack, unpack

torch.set_num_threads(1)
SIM = dict(kind="circuit", unit=3, seed=1, noise=0.0)


async def _local(data, x):
    dev = await sim_device(**SIM)
    with torch.no_grad():
        return (await pnn_from_artifact(loads(data, spec=dev.spec), dev).aforward(torch.from_numpy(x))).numpy()


async def test_deploy_infer_refuse_rollback_over_zmq(tmp_path):
    from pat_runtime.transport.zmq import ZmqCoordinator

    port = free_port()
    dev = await sim_device(**SIM)
    art1, data1 = pnn_artifact(dev, version="1", seed=1)
    art2, data2 = pnn_artifact(dev, version="2", seed=2)
    x = np.random.default_rng(3).random((24, 64), dtype=np.float32)
    dep = Deployment(tmp_path / "node1")
    node = await start_node(dev, f"tcp://127.0.0.1:{port}", "node1", plugins=[dep])
    try:
        # `pat deploy --to zmq://...` path: a coordinator bound for the occasion, closed afterwards
        res = await run_on_target(Target.parse(f"zmq://127.0.0.1:{port}/node1"), "deploy", data1, wait=10)
        assert res["node1"]["model_version"] == "1", res
        async with ZmqCoordinator(f"tcp://127.0.0.1:{port}") as coord:
            await coord.wait_for_node("node1", timeout=10)
            h, logits, labels = await infer_via(coord, "node1", x)
            assert h["model_version"] == "1" and np.array_equal(logits, await _local(data1, x))
            res = await deploy_via(coord, ["node1"], data2)
            assert res["node1"]["model_version"] == "2" and res["node1"]["previous"] == art1.artifact_id
            v2 = (await infer_via(coord, "node1", x))[1]
            np.testing.assert_array_equal(v2, await _local(data2, x))
            # corrupt bytes sent anyway (verify=False): the node refuses, version 2 keeps serving
            bad = bytearray(data1)
            bad[len(bad) // 2] ^= 0xFF
            res = await deploy_via(coord, ["node1"], bytes(bad), verify=False)
            assert isinstance(res["node1"], DeployError)
            assert res["node1"].code in ("corrupt", "checksum_mismatch") and "still serving version 2" in str(res["node1"])
            assert np.array_equal((await infer_via(coord, "node1", x))[1], v2)
            res = await rollback_via(coord, ["node1"])
            assert res["node1"]["model_version"] == "1"
            h, logits, _ = await infer_via(coord, "node1", x)
            assert h["model_version"] == "1" and np.array_equal(logits, await _local(data1, x))
    finally:
        await node.stop()


@pytest.mark.mqtt
async def test_retained_deploy_over_mqtt_reaches_late_nodes_and_refusals_keep_serving(tmp_path):
    from pat_runtime.testing.mosquitto import mosquitto_broker, require_mosquitto
    from pat_runtime.transport.mqtt import MqttCoordinator, MqttEdgeTransport

    require_mosquitto()
    dev = await sim_device(**SIM)
    art1, data1 = pnn_artifact(dev, version="1", seed=1)
    art2, data2 = pnn_artifact(dev, version="2", seed=2)
    x = np.random.default_rng(4).random((16, 64), dtype=np.float32)
    async with mosquitto_broker() as broker:
        # the node is offline: the retained deployment waits on the broker
        with pytest.raises(DeployError) as ei:
            await deploy_mqtt(broker.url, "node1", data1, timeout=0.5)
        assert ei.value.code == "pending"

        async def up():
            d = Deployment(tmp_path / "node1", mqtt=broker.url)
            n = await start_node(await sim_device(**SIM), broker.url, "node1", plugins=[d],
                                 transport=MqttEdgeTransport(broker.url, "node1", heartbeat=0.1))
            return d, n

        dep, node = await up()
        try:
            # the node picks the retained artifact up when it connects
            await wait_until(lambda: dep.current is not None, what="the retained deployment installed")
            assert dep.current.artifact.model_version == "1"
            status = await node_status_mqtt(broker.url, "node1")
            assert status["ok"] and status["artifact_id"] == art1.artifact_id

            res = await deploy_mqtt(broker.url, "node1", data2, timeout=10)
            assert res["model_version"] == "2" and res["previous"] == art1.artifact_id
            # a corrupt artifact: refused with the node's reason, retained message cleared, v2 still serving
            bad = bytearray(data2)
            bad[-200] ^= 0x0F
            with pytest.raises(DeployError) as ei:
                await deploy_mqtt(broker.url, "node1", bytes(bad), timeout=10, verify=False)
            assert ei.value.code in ("corrupt", "checksum_mismatch") and "still serving version 2" in ei.value.message
            async with MqttCoordinator(broker.url) as coord:
                await coord.wait_for_node("node1", timeout=10)
                h, logits, _ = await infer_via(coord, "node1", x)
                assert h["model_version"] == "2" and np.array_equal(logits, await _local(data2, x))

                # sensor data in on PREFIX/NODE/infer -> predictions out on PREFIX/NODE/predictions
                import aiomqtt

                async with aiomqtt.Client("127.0.0.1", broker.port) as cl:
                    await cl.subscribe("pat/node1/predictions", qos=1)
                    await cl.publish("pat/node1/infer", pack(make_header("infer", id="r42"), [x[:3]]), qos=1)
                    async with asyncio.timeout(10):
                        async for msg in cl.messages:
                            ph, (plog, plab) = unpack(bytes(msg.payload))
                            if ph.get("request") == "r42":
                                break
                assert ph["model_version"] == "2" and np.array_equal(plog, logits[:3])

                res = await rollback_mqtt(broker.url, "node1", timeout=10)
                assert res["model_version"] == "1"
                assert (await infer_via(coord, "node1", x))[0]["model_version"] == "1"
            # restart: the retained rollback (to v1's id) is replayed and changes nothing
            await node.stop()
            await dep.close()
            import aiomqtt

            async with aiomqtt.Client("127.0.0.1", broker.port) as cl:
                await cl.subscribe("pat/node1/deployed", qos=1)
                dep, node = await up()
                async with asyncio.timeout(30):   # the node's answer to the replayed rollback
                    async for msg in cl.messages:
                        if bytes(msg.payload) and unpack(bytes(msg.payload))[0].get("unchanged") is True:
                            break
            assert dep.current.artifact.model_version == "1" and dep.history == [art1.artifact_id]
            assert dep.counters["rollbacks"] == 0
        finally:
            await node.stop()
            await dep.close()


async def test_deploy_to_a_whole_fleet_through_its_coordinator(tmp_path):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    devs = [await sim_device(**SIM) for _ in range(2)]
    _, data = pnn_artifact(devs[0], version="5", seed=5)
    deps = [Deployment(tmp_path / f"n{i}") for i in range(2)]
    nodes = [await start_node(d, url, f"n{i}", plugins=[dep]) for i, (d, dep) in enumerate(zip(devs, deps))]
    try:
        res = await run_on_target(Target.parse("fleet", coordinator=url), "deploy", data, wait=1.5)
        assert sorted(res) == ["n0", "n1"] and all(r["model_version"] == "5" for r in res.values()), res
        assert all(d.current.artifact.model_version == "5" for d in deps)
    finally:
        for n in nodes:
            await n.stop()
