"""Hostile artifacts: every defect is an ArtifactError with a clear reason, checked before anything is built,
off the event loop, while the old model keeps serving -- even when a trusted key signed the bad artifact."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from pat_runtime.edge.deployed import Deployment
from pat_runtime.edge.service import NodeService
from pat_runtime.artifact import ArtifactError, loads, pnn_from_artifact
from pat_runtime.signing import TrustedKeys, default_trust_path, load_signing_key
from pat_runtime.testing import sim_device, wait_until
from pat_runtime.testing.artifact_attacks import attacks
from pat_runtime.testing.deploy import pnn_artifact
from pat_runtime.wire import MessageType, make_header

torch.set_num_threads(1)
SIM = dict(kind="circuit", unit=2, seed=5, noise=0.0)
BOMB = 2 * 2**20  # the bench uses 250 MiB; the defect (a compressed member) is the same


@pytest.fixture(scope="module")
def cases():
    dev = asyncio.run(sim_device(**SIM))
    _, valid = pnn_artifact(dev, version="1", seed=1, sign=False)
    return dev, valid


def test_the_parser_refuses_every_attack_with_its_reason(cases):
    dev, valid = cases
    for name, (blob, code) in attacks(valid, bomb_bytes=BOMB).items():
        with pytest.raises(ArtifactError) as ei:
            art = loads(blob, spec=dev.spec)
            pnn_from_artifact(art, dev)
        assert ei.value.code == code, (name, str(ei.value))
        assert ei.value.message, name


async def _node(tmp_path):
    dev = await sim_device(**SIM)
    svc = NodeService(dev, "node1")
    dep = Deployment(tmp_path / "dep")
    await dep(svc)
    return dev, svc, dep


async def _req(svc, kind, arrays=(), **fields):
    return await svc.handle(make_header(kind, node="node1", **fields), list(arrays))


async def test_signed_attacks_are_refused_at_the_edge_while_version_1_serves(tmp_path, cases):
    _, valid = cases
    dev, svc, dep = await _node(tmp_path)
    key = load_signing_key()  # the node trusts this key: the bad artifacts pass the signature check
    _, v1 = pnn_artifact(dev, version="1", seed=1)
    h, _ = await _req(svc, MessageType.DEPLOY, [np.frombuffer(v1, np.uint8)])
    assert h["ok"], h
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    _, (before, _) = await _req(svc, MessageType.INFER, [x])
    hostile = attacks(valid, key=key, bomb_bytes=BOMB)
    for name, (blob, code) in hostile.items():
        h, _ = await _req(svc, MessageType.DEPLOY, [np.frombuffer(blob, np.uint8)])
        assert not h["ok"] and h["error"]["code"] == code, (name, h.get("error"))
        assert "still serving version 1" in h["error"]["message"], name
        h, (logits, _) = await _req(svc, MessageType.INFER, [x])
        assert h["ok"] and h["model_version"] == "1" and np.array_equal(logits, before), name
    assert dep.counters["refused"] == len(hostile) and dep.history == [loads(v1).artifact_id]


class _BlockingTrust(TrustedKeys):
    """The deployer's trusted keys, whose signature check (a step of verification) blocks until released."""

    def __init__(self, base: TrustedKeys):
        super().__init__(base.keys, base.source)
        self.released = threading.Event()
        self.seen: dict = {}

    def check(self, signer):
        self.seen["thread"] = threading.current_thread()
        self.seen["released"] = self.released.wait(timeout=30)  # only the event loop can release it
        return super().check(signer)


async def test_verification_runs_off_the_event_loop(tmp_path):
    trust = _BlockingTrust(TrustedKeys.from_file(default_trust_path()))
    dev = await sim_device(**SIM)
    svc = NodeService(dev, "node1")
    await Deployment(tmp_path / "dep", trusted_keys=trust)(svc)
    _, v1 = pnn_artifact(dev, version="1", seed=1)
    released, seen = trust.released, trust.seen
    task = asyncio.create_task(_req(svc, MessageType.DEPLOY, [np.frombuffer(v1, np.uint8)]))
    # the loop keeps running (heartbeats, requests) while verification blocks
    await wait_until(lambda: "thread" in seen, timeout=30)
    h, _ = await _req(svc, MessageType.PING)
    assert h["ok"]
    released.set()
    h, _ = await task
    assert h["ok"] and seen["released"] and seen["thread"] is not threading.main_thread()
