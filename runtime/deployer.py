"""Client side of deployment: send a ``.pnn`` artifact to edge nodes, roll back, run inference.

Targets (``pat deploy MODEL --to TARGET``)::

    zmq://HOST:PORT/NODE  (or tcp://)   bind a ZeroMQ coordinator on HOST:PORT, wait for NODE to connect, DEPLOY
    mqtt://HOST:PORT/NODE[?prefix=pat]  publish a *retained* message on PREFIX/NODE/deploy and wait for the node's
                                        retained PREFIX/NODE/deployed status (a node that is offline now picks
                                        the artifact up when it connects)
    fleet  + coordinator URL            every node of a coordinator (ZeroMQ bind address or MQTT broker), or the
                                        nodes named, through DEPLOY requests

Every path ends with the node's verdict: its reply (``artifact_id``, ``model_version``) or its refusal
(:class:`DeployError` with the node's error code, e.g. ``checksum_mismatch`` or ``spec_mismatch``). The local
file is verified first (:func:`pat_runtime.artifact.load_artifact`), so a corrupt file never leaves this machine
unless ``verify=False`` (used by tests to prove the node refuses it too).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import ArtifactFailure, DeviceError
from pat_runtime.devices.uri import parse_uri
from pat_runtime.artifact import loads
from pat_runtime.wire import MessageType, make_header, pack, unpack

log = logging.getLogger(__name__)


class DeployError(ArtifactFailure, RuntimeError):
    """A node refused or did not confirm a deployment. ``code`` is the node's :class:`ErrorCode` (or, for a
    local failure without one, e.g. a timeout, the error's class name); ``node`` (also ``where``) names it."""

    def __init__(self, node: str, code: ErrorCode | str, message: str):
        self.node = self.where = node
        self.code: ErrorCode | str = ErrorCode.lookup(code) or str(code)
        self.message = message
        super().__init__(f"[{node}] {self.code}: {message}")

    def __reduce__(self):
        return (self.__class__, (self.node, self.code, self.message))


@dataclass(frozen=True)
class Target:
    scheme: str            # "zmq" | "mqtt"
    url: str               # coordinator bind address (tcp://H:P) or broker URL (mqtt://H:P?prefix=..)
    nodes: tuple[str, ...]
    prefix: str = "pat"

    @staticmethod
    def parse(to: str, coordinator: str | None = None, nodes: Sequence[str] = ()) -> "Target":
        if to == "fleet":
            if not coordinator:
                raise ValueError("--to fleet needs --coordinator tcp://HOST:PORT or mqtt://HOST:PORT")
            u = parse_uri(coordinator, what="--coordinator")
            scheme = "mqtt" if u.scheme in ("mqtt", "mqtts") else "zmq"
            url = coordinator if scheme == "mqtt" else f"tcp://{u.netloc}"
            return Target(scheme, url, tuple(nodes), u.option("prefix", "pat"))
        u = parse_uri(to, what="deploy target")
        node = u.path
        if u.scheme not in ("zmq", "tcp", "mqtt", "mqtts") or not u.netloc or not node:
            raise ValueError(f"bad deploy target {u.redacted!r}: use zmq://HOST:PORT/NODE, mqtt://HOST:PORT/NODE "
                             "or fleet")
        if u.scheme in ("mqtt", "mqtts"):
            return Target("mqtt", u.geturl(path=""), (node,), u.option("prefix", "pat"))
        return Target("zmq", f"tcp://{u.netloc}", (node,))


def artifact_array(data: bytes) -> np.ndarray:
    return np.frombuffer(bytes(data), np.uint8)


# ----- through a coordinator (ZeroMQ or MQTT request/reply) ------------------------------------------------
async def deploy_via(coord: Any, nodes: Sequence[str], data: bytes, timeout: float = 30.0,
                     verify: bool = True) -> dict[str, dict[str, Any] | DeployError]:
    """DEPLOY ``data`` to ``nodes`` concurrently; per node the reply fields or a :class:`DeployError`."""
    sha = loads(data).artifact_id if verify else None
    fields = {"sha256": sha} if sha else {}
    arr = artifact_array(data)
    return await _each(coord, nodes, MessageType.DEPLOY, [arr], timeout, **fields)


async def rollback_via(coord: Any, nodes: Sequence[str], to: str | None = None,
                       timeout: float = 30.0) -> dict[str, dict[str, Any] | DeployError]:
    return await _each(coord, nodes, MessageType.ROLLBACK, [], timeout, **({"to": to} if to else {}))


async def infer_via(coord: Any, node: str, x: np.ndarray, timeout: float = 30.0) -> tuple[dict, np.ndarray, np.ndarray]:
    h, arrays = await coord.request(node, MessageType.INFER, [np.asarray(x, np.float32)], timeout=timeout)
    return h, arrays[0], arrays[1]


async def _each(coord, nodes, kind, arrays, timeout, **fields):
    async def one(node):
        try:
            h, _ = await coord.request(node, kind, arrays, timeout=timeout, **fields)
            return {k: h.get(k) for k in ("artifact_id", "model_version", "previous", "unchanged")}
        except DeviceError as e:  # the node's code (a refusal, a request not encodable), else the error class
            code = getattr(e, "code", None)
            return DeployError(node, code if isinstance(code, ErrorCode) else type(e).__name__, e.message)

    res = await asyncio.gather(*(one(n) for n in nodes))
    return dict(zip(nodes, res))


async def run_on_target(target: Target, op: str, data: bytes | None = None, to: str | None = None,
                        wait: float = 10.0, timeout: float = 30.0, verify: bool = True,
                        retain: bool = True) -> dict[str, dict[str, Any] | DeployError]:
    """``op`` = "deploy" | "rollback" on every node of ``target`` (see the module docstring)."""
    if target.scheme == "mqtt" and len(target.nodes) == 1 and retain:
        node = target.nodes[0]
        try:
            if op == "deploy":
                return {node: await deploy_mqtt(target.url, node, data, prefix=target.prefix, timeout=timeout,
                                                verify=verify)}
            return {node: await rollback_mqtt(target.url, node, to=to, prefix=target.prefix, timeout=timeout)}
        except DeployError as e:
            return {node: e}
    coord = _coordinator(target)
    await coord.start()
    try:
        nodes = list(target.nodes)
        if nodes:
            await asyncio.gather(*(coord.wait_for_node(n, timeout=wait) for n in nodes))
        else:  # a whole fleet: everyone who joined within `wait` seconds
            await asyncio.sleep(wait)
            nodes = sorted(coord.alive_nodes())
            if not nodes:
                raise DeployError("fleet", ErrorCode.NO_NODES, f"no node joined {target.url} within {wait} s")
        if op == "deploy":
            return await deploy_via(coord, nodes, data, timeout=timeout, verify=verify)
        return await rollback_via(coord, nodes, to=to, timeout=timeout)
    finally:
        await coord.close()


def _coordinator(target: Target):
    if target.scheme == "mqtt":
        from pat_runtime.transport.mqtt import MqttCoordinator

        return MqttCoordinator(target.url, prefix=target.prefix)
    from pat_runtime.transport.zmq import ZmqCoordinator

    return ZmqCoordinator(target.url)


# ----- MQTT retained deploy --------------------------------------------------------------------------------
async def deploy_mqtt(url: str, node: str, data: bytes, prefix: str = "pat", timeout: float = 30.0,
                      verify: bool = True) -> dict[str, Any]:
    """Publish ``data`` retained on ``PREFIX/NODE/deploy`` and wait for the node's verdict.

    On refusal the retained message is cleared (so the broker does not keep offering a bad artifact) and
    :class:`DeployError` is raised. A node that does not answer within ``timeout`` leaves the retained
    message in place (it applies it when it comes online) and ``DeployError("pending")`` is raised.
    """
    sha = loads(data).artifact_id if verify else None
    header = make_header(MessageType.DEPLOY, node=node, **({"sha256": sha} if sha else {}))
    return await _desired_state(url, node, prefix, pack(header, [artifact_array(data)]), header["id"], timeout)


async def rollback_mqtt(url: str, node: str, to: str | None = None, prefix: str = "pat",
                        timeout: float = 30.0) -> dict[str, Any]:
    """Retained rollback request to ``to``; without it, the node's previous version as its retained status says.

    The retained message always names the target id, so replaying it (node restart) changes nothing.
    """
    if to is None:
        status = await node_status_mqtt(url, node, prefix, timeout=min(timeout, 5.0))
        to = status.get("previous")
        if not to:
            raise DeployError(node, ErrorCode.NO_PREVIOUS, f"{node} reports no previous version to roll back to")
    header = make_header(MessageType.ROLLBACK, node=node, to=to)
    return await _desired_state(url, node, prefix, pack(header), header["id"], timeout)


async def node_status_mqtt(url: str, node: str, prefix: str = "pat", timeout: float = 5.0) -> dict[str, Any]:
    """The node's retained deployment status (``PREFIX/NODE/deployed``)."""
    from pat_runtime.transport.mqtt.common import MqttUrl, make_client

    async with make_client(MqttUrl.parse(url), f"pat-deploy-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"{prefix}/{node}/deployed", qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for msg in client.messages:
                    if msg.payload:
                        return unpack(bytes(msg.payload))[0]
        except TimeoutError:
            pass
    raise DeployError(node, ErrorCode.NO_STATUS,
                      f"{node} has published no deployment status on {prefix}/{node}/deployed")


async def _desired_state(url: str, node: str, prefix: str, payload: bytes, req: str, timeout: float) -> dict:
    import aiomqtt

    from pat_runtime.transport.mqtt.common import MqttUrl, make_client

    u = MqttUrl.parse(url)
    deploy_topic, status_topic = f"{prefix}/{node}/deploy", f"{prefix}/{node}/deployed"
    async with make_client(u, f"pat-deploy-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(status_topic, qos=1)
        await client.publish(deploy_topic, payload, qos=1, retain=True)
        try:
            async with asyncio.timeout(timeout):
                async for msg in client.messages:
                    try:
                        h, _ = unpack(bytes(msg.payload))
                    except Exception:
                        continue
                    if h.get("request") != req:
                        continue  # an older status (retained) or someone else's deployment
                    if h.get("ok"):
                        return {k: h.get(k) for k in ("artifact_id", "model_version", "previous", "unchanged")}
                    err = h.get("error") or {}
                    await client.publish(deploy_topic, b"", qos=1, retain=True)
                    raise DeployError(node, err.get("code", ErrorCode.REFUSED), err.get("message", "refused"))
        except TimeoutError:
            raise DeployError(node, ErrorCode.PENDING,
                              f"no answer from {node} within {timeout} s; the retained deployment "
                              f"stays on {deploy_topic} until the node connects") from None
        except aiomqtt.MqttError as e:
            raise DeployError(node, ErrorCode.BROKER, str(e)) from None
    raise DeployError(node, ErrorCode.BROKER, "connection closed")
