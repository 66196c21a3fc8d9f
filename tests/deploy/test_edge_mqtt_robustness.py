"""Edge deploy service over MQTT under hostile or stalled conditions (real Mosquitto):
a retained malformed artifact is refused (also after a restart) and the service lives on; predictions made
while the broker stalls are kept in a bounded outbox whose drops are counted, not lost silently."""
from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest
import torch

from pat_runtime.edge.deployed import Deployment
from pat_runtime.edge.service import NodeService
from pat_runtime.signing import load_signing_key
from pat_runtime.testing import sim_device
from pat_runtime.testing.artifact_attacks import attacks
from pat_runtime.testing.deploy import pnn_artifact
from pat_runtime.wire import MessageType, make_header, pack, unpack
from pat_runtime.testing import wait_until

pytestmark = pytest.mark.mqtt
torch.set_num_threads(1)
SIM = dict(kind="circuit", unit=2, seed=5, noise=0.0)


async def _node(tmp_path, url, **kw):
    dev = await sim_device(**SIM)
    svc = NodeService(dev, "node1")
    dep = Deployment(tmp_path / "dep", mqtt=url, **kw)
    await dep(svc)
    await dep.wait_mqtt_ready(20)
    return dev, svc, dep


async def test_retained_malformed_artifacts_are_refused_and_the_service_survives_restarts(tmp_path):
    import aiomqtt

    from pat_runtime.testing.mosquitto import mosquitto_broker, require_mosquitto

    require_mosquitto()
    dev = await sim_device(**SIM)
    _, v1 = pnn_artifact(dev, version="1", seed=1)
    hostile = attacks(pnn_artifact(dev, sign=False)[1], key=load_signing_key(), bomb_bytes=2**20)
    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    async with mosquitto_broker() as broker, aiomqtt.Client("127.0.0.1", broker.port) as cl:
        await cl.subscribe("pat/node1/deployed", qos=1)
        await cl.subscribe("pat/node1/predictions", qos=1)

        async def status_for(req):
            async with asyncio.timeout(20):
                async for msg in cl.messages:
                    h, _ = unpack(bytes(msg.payload))
                    if h.get("request") == req:
                        return h

        async def predicts(req):  # the deploy task still serves infer requests
            await cl.publish("pat/node1/infer", pack(make_header("infer", id=req), [x]), qos=1)
            return await status_for(req)

        _, svc, dep = await _node(tmp_path, broker.url)
        try:
            await dep.install(v1)
            for name in ("shape [2**64]", "manifest nested 100000 deep", "n_classes = 2e6"):
                blob, code = hostile[name]
                h = make_header(MessageType.DEPLOY, node="node1")
                await cl.publish("pat/node1/deploy", pack(h, [np.frombuffer(blob, np.uint8)]), qos=1, retain=True)
                st = await status_for(h["id"])
                assert not st["ok"] and st["error"]["code"] == code, (name, st)
                assert st["model_version"] == "1" and "still serving version 1" in st["error"]["message"]
                assert (await predicts(f"after {name}"))["model_version"] == "1"
            # garbage on the retained deploy topic: not even a wire message
            await cl.publish("pat/node1/deploy", b"PAT1 garbage", qos=1, retain=True)
            assert (await predicts("after garbage"))["model_version"] == "1"
            await cl.publish("pat/node1/deploy", pack(h, [np.zeros(3, np.float32)]), qos=1, retain=True)
            st = await status_for(h["id"])
            assert not st["ok"] and st["error"]["code"] == "bad_request"
        finally:
            await dep.close()
        # restart: the broker replays the retained bad message; it is refused again and the node serves on
        _, svc, dep = await _node(tmp_path, broker.url)
        try:
            assert dep.current.artifact.model_version == "1"
            assert (await predicts("after restart"))["model_version"] == "1"
            assert dep.mqtt_serving
        finally:
            await dep.close()


async def test_predictions_during_a_broker_stall_are_bounded_and_drops_are_counted(tmp_path):
    import aiomqtt

    from pat_runtime.testing.mosquitto import mosquitto_broker, require_mosquitto

    require_mosquitto()
    cap, n = 8, 30
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    async with mosquitto_broker() as broker, aiomqtt.Client("127.0.0.1", broker.port) as cl:
        await cl.subscribe("pat/node1/predictions", qos=1)
        dev, svc, dep = await _node(tmp_path, broker.url, prediction_buffer=cap)
        try:
            await dep.install(pnn_artifact(dev, version="1", seed=1)[1])
            os.kill(broker.process.pid, signal.SIGSTOP)  # the broker stalls: no acks, nothing delivered
            try:
                for i in range(n):
                    await dep.infer(x, request=f"r{i}")
                st, _ = await svc.handle(make_header(MessageType.STATUS, node="node1"), [])
                assert st["counters"]["predictions_dropped"] == n - cap
                assert st["counters"]["predictions_queued"] == cap
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            got = []
            try:
                async with asyncio.timeout(20):
                    async for msg in cl.messages:
                        got.append(unpack(bytes(msg.payload))[0]["request"])
                        if got[-1] == f"r{n - 1}":
                            break
            except TimeoutError:
                raise AssertionError(f"received {got}; outbox {dep.predictions.stats()}") from None
            # everything still queued arrives, in order (a message already in flight may arrive too)
            assert got[-cap:] == [f"r{i}" for i in range(n - cap, n)], got
            await wait_until(lambda: len(dep.predictions) == 0, 20.0, "outbox drained")
            models, _ = await svc.handle(make_header("models", node="node1"), [])
            assert models["predictions"]["dropped"] == n - cap and models["predictions"]["queued"] == 0
        finally:
            await dep.close()
