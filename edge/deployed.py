"""Deployed PNNs on an edge node: install, roll back and run a trained model on the node's own device.

A :class:`Deployment` is a NodeService plugin (``EdgeNode(device, transport, node_id, plugins=[dep])``)
that adds three request types (see :mod:`pat_runtime.wire` ``MessageType``)::

    deploy    arrays [artifact bytes (uint8[N])], optional field sha256 (expected artifact id)
              -> {artifact_id, model_version, previous, unchanged}
    rollback  optional field to (an artifact id in the history; default: the previous one)
              -> {artifact_id, model_version, previous}
    infer     arrays [x (float[B, F] or [F])]  -> arrays [logits float32[B, C], labels int64[B]],
              fields {artifact_id, model_version}
    models    -> {current, history: [{artifact_id, model_version, created}...]}

An artifact is verified (:func:`pat_runtime.artifact.loads`: container, bounds, sha256 checksums, format version,
an Ed25519 signature by a key in ``trusted_keys``) and checked against the node's device spec (kind, dims,
ranges) *before* anything changes, in a worker thread so heartbeats and requests go on; a refused artifact
gets an error reply whose code is the :class:`~pat_runtime.artifact.ArtifactError` code and the running model
keeps serving. Physical layers run on the node's device (``PNN.aforward`` under ``torch.no_grad``), so
inference is local: no twin and no coordinator are needed.

Persistence (``directory``)::

    artifacts/<artifact_id>.pnn     the verified artifact bytes (the newest ``keep`` of the history)
    state.json                      {"history": [artifact ids, oldest first]}; current = last

Both are written atomically; a restarted node reloads (and re-verifies) the current model, falling back to
older ones if a file was damaged on disk.

MQTT (optional, ``mqtt="mqtt://host:port"``): the plugin runs its own client and uses, under ``prefix``::

    PREFIX/NODE/deploy        retained desired state: a packed {"type": "deploy"} + [artifact bytes]
                              or {"type": "rollback", "to": artifact_id}; applied on (re)connect too
    PREFIX/NODE/deployed      retained, published by the node: {"ok", "artifact_id", "model_version",
                              "request", "error"} after each deploy/rollback attempt
    PREFIX/NODE/infer         packed {"type": "infer", "id"} + [x]  (sensor data in)
    PREFIX/NODE/predictions   packed {"type": "predictions", "request", "artifact_id", "model_version"}
                              + [logits, labels] for every inference (any transport), through a bounded
                              outbox (:mod:`pat_runtime.edge.predictions`): drops are counted, never silent
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.edge.predictions import PredictionBuffer
from pat_runtime.edge.service import NodeService
from pat_runtime.protocol import Reply, Request, RequestError, reply_code
from pat_runtime.artifact import Artifact, ArtifactError, atomic_write, dumps, loads, normalize, pnn_from_artifact
from pat_runtime.signing import KeyFileError, SigningKey, TrustedKeys, default_trust_path, generate_key, \
    load_signing_key
from pat_runtime.devices import Backoff
from pat_runtime.wire import MessageType, WireError, make_header, pack, unpack

log = logging.getLogger(__name__)

MODELS = "models"


@dataclass
class Installed:
    """A verified artifact and its runnable model bound to this node's device."""

    artifact: Artifact
    model: Any  # pat_runtime.pat.PNN
    installed_at: float

    @property
    def info(self) -> dict[str, Any]:
        return {"artifact_id": self.artifact.artifact_id, "model_version": self.artifact.model_version,
                "created": self.artifact.manifest.get("created")}

    async def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats = normalize(x, self.artifact.normalization)
        # detach instead of no_grad(): grad mode is per thread and must not be held across an await
        logits = (await self.model.aforward(torch.from_numpy(feats))).detach()
        logits = logits.numpy().astype(np.float32)
        return logits, logits.argmax(axis=1).astype(np.int64)


class Deployment:
    """NodeService plugin: keeps a verified model history in ``directory`` and serves inference."""

    def __init__(self, directory: str | Path, keep: int = 3, mqtt: str | None = None, prefix: str = "pat",
                 publish_predictions: bool = True, reconnect_delay: float = 0.5,
                 trusted_keys: str | Path | TrustedKeys | None = None, prediction_buffer: int = 10_000):
        """``trusted_keys``: the keys artifacts must be signed by -- a :class:`TrustedKeys` or a trusted-keys
        file, re-read at every deployment so a key rotation needs no restart (default
        :func:`pat_runtime.signing.default_trust_path`)."""
        self.dir = Path(directory)
        self.trusted_keys = trusted_keys if trusted_keys is not None else default_trust_path()
        self.keep = max(2, int(keep))
        self.mqtt_url = mqtt
        self.prefix = prefix
        self.publish_predictions = publish_predictions
        self.reconnect_delay = reconnect_delay
        self.service: NodeService | None = None
        self.history: list[str] = []
        self.current: Installed | None = None
        self._cache: dict[str, Installed] = {}
        self._lock = asyncio.Lock()
        self._mqtt_task: asyncio.Task | None = None
        self._mqtt_client = None
        self._mqtt_ready = asyncio.Event()
        self.counters = {"deploys": 0, "refused": 0, "rollbacks": 0, "inferences": 0}
        self.predictions = PredictionBuffer(prediction_buffer)

    # ----- plugin entry ------------------------------------------------------------------------------
    async def __call__(self, service: NodeService) -> None:
        self.service = service
        service.register(MessageType.DEPLOY, self._h_deploy)
        service.register(MessageType.ROLLBACK, self._h_rollback)
        service.register(MessageType.INFER, self._h_infer)
        service.register(MODELS, self._h_models)
        self.predictions.attach(service.counters)
        async with self._lock:
            await asyncio.to_thread(self._restore)
        if self.mqtt_url and self._mqtt_task is None:
            self._mqtt_task = asyncio.create_task(self._mqtt_loop(), name=f"deploy-mqtt-{service.node_id}")

    async def wait_mqtt_ready(self, timeout: float | None = None) -> None:
        """Until the deploy/infer MQTT subscriptions are in place (``TimeoutError`` after ``timeout`` s)."""
        await asyncio.wait_for(self._mqtt_ready.wait(), timeout)

    @property
    def mqtt_serving(self) -> bool:
        """Is the MQTT deploy service running (started, not ended by an error)?"""
        return self._mqtt_task is not None and not self._mqtt_task.done()

    async def close(self) -> None:
        """Stop the MQTT client (if any). Call when the node stops."""
        task, self._mqtt_task = self._mqtt_task, None
        while task is not None and not task.done():
            task.cancel()
            # Python 3.11's asyncio.wait_for (inside aiomqtt's publish) can swallow a cancellation that races
            # with a completion (a PUBACK): cancel again until the task has really ended
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.debug("node %s: deploy MQTT task ended with %r", self.node_id, task.exception())

    async def __aenter__(self) -> "Deployment":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def node_id(self) -> str:
        return self.service.node_id if self.service else "?"

    # ----- core operations (any transport) ----------------------------------------------------------
    def _device(self):
        if self.service is None:
            raise RuntimeError("Deployment is not attached to a NodeService")
        return self.service.device

    def _trust(self) -> TrustedKeys:
        """The deployer's trusted keys plus this node's own key (which signs only what the node derived itself
        from a verified artifact, e.g. a per-unit calibration; see :meth:`install_derived`)."""
        if isinstance(self.trusted_keys, TrustedKeys):
            base = self.trusted_keys
        else:
            try:
                base = TrustedKeys.from_file(self.trusted_keys)
            except ValueError as e:
                raise ArtifactError(ErrorCode.UNTRUSTED_KEY, f"trusted keys unusable: {e}") from None
        own = self._node_key(create=False)
        return base if own is None else TrustedKeys({*base.keys, own.public_raw}, f"{base.source} + node key")

    def _node_key(self, create: bool) -> SigningKey | None:
        """This node's own signing key (``DIR/node_key/signing.key``, 0600), created on first use."""
        d = self.dir / "node_key"
        if not (d / "signing.key").exists():
            if not create:
                return None
            try:
                return generate_key(d, comment=f"node {self.node_id} (derived artifacts)", trust=False)[2]
            except KeyFileError as e:
                raise ArtifactError(ErrorCode.UNTRUSTED_KEY, f"cannot create this node's own key: {e}") from None
        try:
            return load_signing_key(d / "signing.key")
        except KeyFileError as e:
            raise ArtifactError(ErrorCode.UNTRUSTED_KEY, f"this node's own key is unusable: {e}") from None

    async def install_derived(self, artifact: Artifact) -> dict[str, Any]:
        """Install an artifact this node derived from a verified one (a per-unit calibration of the deployed
        model): signed with the node's own key, then verified and switched like any deployment."""
        key = await asyncio.to_thread(self._node_key, True)
        return await self.install(await asyncio.to_thread(dumps, artifact, key))

    def _verify(self, data: bytes, expect: str | None = None) -> Installed:
        """Verify bytes against this device and build the model; raises ArtifactError, changes nothing.

        Blocking (parsing, hashing, building): call it through ``asyncio.to_thread``."""
        dev = self._device()
        art = loads(data, spec=dev.spec, trusted=self._trust())
        if expect and art.artifact_id != expect:
            raise ArtifactError(ErrorCode.CHECKSUM_MISMATCH, f"artifact id {art.artifact_id[:16]}... is not the "
                                                             f"expected {str(expect)[:16]}... (damaged in transit?)")
        model = pnn_from_artifact(art, dev)
        return Installed(art, model, time.time())

    async def install(self, data: bytes, expect: str | None = None) -> dict[str, Any]:
        """Verify, persist and switch to an artifact. On any error the current model stays."""
        async with self._lock:
            try:
                inst = await asyncio.to_thread(self._verify, data, expect)
            except ArtifactError:
                self.counters["refused"] += 1
                raise
            aid = inst.artifact.artifact_id
            prev = self.current.info["artifact_id"] if self.current else None
            if prev == aid:  # same model; the bytes may carry a new signature (key rotation): keep those
                await asyncio.to_thread(atomic_write, self._artifact_path(aid), bytes(data))
                return {**inst.info, "previous": self._previous_id(), "unchanged": True}
            atomic_write(self._artifact_path(aid), bytes(data))
            self.history = [h for h in self.history if h != aid] + [aid]
            self._cache[aid] = inst
            self.current = inst
            self._prune()
            self.counters["deploys"] += 1
            log.info("node %s: deployed %s (version %s)", self.node_id, aid[:12], inst.artifact.model_version)
            return {**inst.info, "previous": prev, "unchanged": False}

    async def rollback(self, to: str | None = None) -> dict[str, Any]:
        """Go back to the previous artifact (or to ``to``, an id in the history)."""
        async with self._lock:
            if self.current is None:
                raise RequestError(ErrorCode.NO_MODEL, "nothing is deployed")
            if to is not None and self.current.artifact.artifact_id == to:
                return {**self.current.info, "previous": self._previous_id(), "unchanged": True}
            if to is None:
                if len(self.history) < 2:
                    raise RequestError(ErrorCode.NO_PREVIOUS, "no previous version to roll back to")
                idx = len(self.history) - 2
            elif to in self.history:
                idx = self.history.index(to)
            else:
                raise RequestError(ErrorCode.UNKNOWN_VERSION, f"artifact {to[:16]}... is not in this node's history")
            target = self.history[idx]
            inst = await asyncio.to_thread(self._load, target)  # ArtifactError if the stored file went bad
            self.history = self.history[: idx + 1]
            self.current = inst
            self._prune()
            self.counters["rollbacks"] += 1
            log.info("node %s: rolled back to %s (version %s)", self.node_id, target[:12], inst.artifact.model_version)
            return {**inst.info, "previous": self._previous_id(), "unchanged": False}

    async def infer(self, x: np.ndarray, request: str = "") -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        inst = self.current
        if inst is None:
            raise RequestError(ErrorCode.NO_MODEL, "no model is deployed on this node")
        try:
            logits, labels = await inst.predict(x)
        except ValueError as e:
            if type(e) is ValueError:  # our own shape/normalization errors; device errors pass through
                raise RequestError(ErrorCode.BAD_SHAPE, str(e)) from None
            raise
        self.counters["inferences"] += 1
        info = {"artifact_id": inst.artifact.artifact_id, "model_version": inst.artifact.model_version}
        if self.publish_predictions and self.mqtt_url:  # queued (bounded) while the broker is away or slow
            self.predictions.put(self._topic("predictions"),
                                 pack(make_header("predictions", node=self.node_id, request=request, **info),
                                      [logits, labels]))
        return info, logits, labels

    # ----- NodeService handlers --------------------------------------------------------------------
    async def _h_deploy(self, req: Request) -> Reply:
        arrays = req.arrays
        if len(arrays) != 1 or arrays[0].dtype != np.uint8 or arrays[0].ndim != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "deploy needs one uint8[N] array holding the artifact bytes")
        expect = req.get("sha256")
        try:
            return req.reply(**await self.install(arrays[0].tobytes(), expect if isinstance(expect, str) else None))
        except ArtifactError as e:
            raise RequestError(e.code, f"artifact refused, still serving "
                                       f"{self._current_desc()}: {e.message}") from None

    async def _h_rollback(self, req: Request) -> Reply:
        to = req.get("to")
        try:
            return req.reply(**await self.rollback(to if isinstance(to, str) else None))
        except ArtifactError as e:
            raise RequestError(e.code, f"stored artifact unusable, still serving {self._current_desc()}: "
                                       f"{e.message}") from None

    async def _h_infer(self, req: Request) -> Reply:
        if len(req.arrays) != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, f"infer needs 1 array [x], got {len(req.arrays)}")
        info, logits, labels = await self.infer(np.asarray(req.arrays[0]), request=str(req.get("id", "")))
        return req.reply([logits, labels], **info)

    async def _h_models(self, req: Request) -> Reply:
        hist = []
        for aid in self.history:
            inst = self._cache.get(aid)
            hist.append(inst.info if inst else {"artifact_id": aid})
        return req.reply(current=self.current.info if self.current else None, history=hist,
                         counters=dict(self.counters), predictions=self.predictions.stats())

    # ----- persistence ------------------------------------------------------------------------------
    def _artifact_path(self, aid: str) -> Path:
        return self.dir / "artifacts" / f"{aid}.pnn"

    def _save_state(self, history: list[str]) -> None:
        atomic_write(self.dir / "state.json", json.dumps({"history": history}).encode())

    def _load(self, aid: str) -> Installed:
        if aid in self._cache:
            return self._cache[aid]
        try:
            data = self._artifact_path(aid).read_bytes()
        except OSError as e:
            raise ArtifactError(ErrorCode.UNREADABLE, f"stored artifact {aid[:16]}... is missing: {e}") from None
        inst = self._verify(data, expect=aid)
        self._cache[aid] = inst
        return inst

    def _restore(self) -> None:
        """Reload the persisted history; the newest artifact that still verifies becomes current."""
        try:
            saved = json.loads((self.dir / "state.json").read_text())["history"]
            history = [h for h in saved if isinstance(h, str)]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("node %s: deployment state unreadable (%s); starting without a model", self.node_id, e)
            return
        good = []
        for aid in history:  # re-verify every stored version; a damaged one is dropped from the history
            try:
                self._load(aid)
                good.append(aid)
            except ArtifactError as e:
                log.error("node %s: stored artifact %s refused (%s); dropping it", self.node_id, aid[:12], e)
        history = good
        self.current = self._cache[history[-1]] if history else None
        self.history = history
        if history != saved:
            self._save_state(history)

    def _prune(self) -> None:
        """Keep the newest ``keep`` versions (history, cache and files) and persist the history."""
        self.history = self.history[-self.keep:]
        keep = set(self.history)
        for aid in list(self._cache):
            if aid not in keep:
                del self._cache[aid]
        self._save_state(self.history)
        adir = self.dir / "artifacts"
        if adir.is_dir():
            for p in adir.glob("*.pnn"):
                if p.stem not in keep:
                    p.unlink(missing_ok=True)

    def _previous_id(self) -> str | None:
        return self.history[-2] if len(self.history) >= 2 else None

    def _current_desc(self) -> str:
        if self.current is None:
            return "no model"
        return f"version {self.current.artifact.model_version} ({self.current.artifact.artifact_id[:12]})"

    # ----- MQTT ---------------------------------------------------------------------------------------
    def _topic(self, kind: str) -> str:
        return f"{self.prefix}/{self.node_id}/{kind}"

    async def _mqtt_loop(self) -> None:
        import aiomqtt

        from pat_runtime.transport.mqtt.common import MqttUrl, make_client

        url = MqttUrl.parse(self.mqtt_url)
        backoff = Backoff(self.reconnect_delay, max(5.0, self.reconnect_delay))   # jittered: no thundering herd
        while True:
            try:
                client = make_client(url, f"{self.node_id}-deploy-{uuid.uuid4().hex[:8]}")
                async with client:
                    await client.subscribe(self._topic("deploy"), qos=1)
                    await client.subscribe(self._topic("infer"), qos=1)
                    backoff.reset()
                    self._mqtt_client = client
                    self._mqtt_ready.set()
                    drain = asyncio.create_task(self.predictions.drain(
                        lambda topic, payload: client.publish(topic, payload, qos=1)),
                        name=f"predictions-{self.node_id}")
                    try:
                        async for msg in client.messages:
                            try:
                                await self._on_mqtt(client, msg)
                            except aiomqtt.MqttError:
                                raise
                            except Exception:  # one bad message must not end the node's deploy service
                                log.exception("node %s: message on %s failed", self.node_id, msg.topic)
                    finally:
                        drain.cancel()
                        await asyncio.gather(drain, return_exceptions=True)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never die silently: log it and serve again after a pause
                if asyncio.current_task().cancelling():  # closing: the client's exit replaced the cancellation
                    raise asyncio.CancelledError() from e
                if isinstance(e, aiomqtt.MqttError):
                    log.warning("node %s: deploy MQTT connection lost (%s); retrying", self.node_id, e)
                else:
                    log.exception("node %s: deploy MQTT service failed; restarting it", self.node_id)
            finally:
                self._mqtt_client = None
                self._mqtt_ready.clear()
            await asyncio.sleep(backoff.next())

    async def _on_mqtt(self, client, msg) -> None:
        payload = bytes(msg.payload)
        if not payload:  # a cleared retained message
            return
        kind = str(msg.topic).rsplit("/", 1)[-1]
        try:
            h, arrays = unpack(payload)
        except WireError as e:
            log.warning("node %s: unreadable message on %s: %s", self.node_id, msg.topic, e)
            if kind == "deploy":
                await self._announce(client, {"ok": False, "request": None,
                                              "error": {"code": e.code, "message": str(e)}})
            return
        if kind == "deploy":
            await self._announce(client, await self._apply_desired(h, arrays))
        elif kind == "infer":
            try:
                if len(arrays) != 1:
                    raise RequestError(ErrorCode.BAD_REQUEST, "infer needs one array [x]")
                await self.infer(np.asarray(arrays[0]), request=str(h.get("id", "")))
            except Exception as e:  # publish the failure instead of the predictions
                code = reply_code(e)
                self.predictions.put(self._topic("predictions"),
                                     pack(make_header("predictions", node=self.node_id, request=str(h.get("id", "")),
                                                      ok=False, error={"code": code, "message": str(e)[:2000]})))

    async def _apply_desired(self, h: dict[str, Any], arrays: list[np.ndarray]) -> dict[str, Any]:
        """Apply a retained deploy-topic message; returns the status to announce."""
        req = h.get("id")
        try:
            if h.get("type") == MessageType.DEPLOY:
                if len(arrays) != 1 or arrays[0].dtype != np.uint8:
                    raise RequestError(ErrorCode.BAD_REQUEST, "deploy needs one uint8[N] array")
                sha = h.get("sha256")
                info = await self.install(arrays[0].tobytes(), sha if isinstance(sha, str) else None)
            elif h.get("type") == MessageType.ROLLBACK:
                to = h.get("to")
                info = await self.rollback(to if isinstance(to, str) else None)
            else:
                raise RequestError(ErrorCode.BAD_REQUEST,
                                   f"unexpected message type {h.get('type')!r} on the deploy topic")
            return {"ok": True, "request": req, **info}
        except Exception as e:  # ArtifactError, RequestError -- or anything else: a refusal, never a dead task
            code = reply_code(e)
            msg = e.message if isinstance(e, ArtifactError) else str(e)
            if not isinstance(e, (ArtifactError, RequestError)):
                log.exception("node %s: unexpected error applying a deploy-topic message", self.node_id)
                msg = f"{type(e).__name__}: {msg}"
            log.warning("node %s: deploy refused (%s: %s)", self.node_id, code, msg)
            return {"ok": False, "request": req, "error": {"code": code, "message": f"refused, still serving "
                                                                                     f"{self._current_desc()}: {msg}"},
                    **(self.current.info if self.current else {}), "previous": self._previous_id()}

    async def _announce(self, client, status: dict[str, Any]) -> None:
        await client.publish(self._topic("deployed"), pack(make_header("deployed", node=self.node_id, **status)),
                             qos=1, retain=True)
