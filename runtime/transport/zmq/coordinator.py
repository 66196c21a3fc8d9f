"""ZmqCoordinator: the training-side ROUTER that talks to many edge nodes (DEALERs).

Frames on the ROUTER are ``[routing_id, header, *array_buffers]`` (see :mod:`pat_runtime.wire`). A routing id is
bound to a node id by an accepted hello (:mod:`.identity`: with a CURVE keys map only the key registered for
that node id may claim it; otherwise the first live claim holds it). Without CURVE the coordinator binds
loopback endpoints only unless ``insecure=True``. A reader callback (:class:`~.driver.SocketDriver`)
dispatches everything the nodes send:

* ``reply``     -> resolves the future of the pending request with the same ``id`` (and the same node)
* ``hello``     -> claims a node id for the connection (refused claims get an error reply and change
                   nothing) and registers the node with its ``spec``
* ``heartbeat`` -> refreshes ``last_seen``; from an unknown node it is answered with ``hello``
                   ("say hello"), so nodes re-announce themselves after a coordinator restart
* ``bye``       -> marks the node dead and fails its in-flight requests at once

Only known hello/heartbeat fields are kept (:mod:`pat_runtime.transport.meta`). Anything but a hello or a
heartbeat from a connection bound to no node id is counted in ``stats.rejected`` and dropped.

Malformed messages are counted in ``stats.malformed`` and dropped. A liveness task marks nodes dead after
``liveness`` seconds without traffic.

**Bundles** (no added delay): requests to one node that are transmitted in the same event-loop iteration
(e.g. 8 pipelined callers woken by 8 replies) go out as ONE ZeroMQ message (:func:`pat_runtime.wire.encode_bundle`)
at the end of that iteration, to nodes whose hello announced ``bundle: N`` (an older edge gets single
messages). At most ``min(N, bundle_max, limits.max_bundle)`` requests and ``bundle_bytes`` per bundle; larger
requests go alone, and so does a request that is the node's only one in flight while the node's last reply
came alone (window 1: sent at once, without waiting for the end of the iteration). Every request in a bundle keeps its own id, deadline, retries and reply; the node answers the inline
ones with one reply bundle, which is split and every reply validated on its own (only replies may be
bundled; a malformed part is counted in ``stats.malformed`` and the rest are served).

Requests go through the shared engine (:mod:`pat_runtime.transport.engine`: pending table, one deadline sweep,
retries with the same id, per-node cap ``max_inflight``); this class only encodes ``[node, header, *arrays]``
and sends it with ``NOBLOCK``. A node that is not connected (EHOSTUNREACH) or a full send queue counts as
"not sent now" and is re-tried with back-off within the attempt.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

import zmq
import zmq.asyncio

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import DeviceConnectionError
from pat_runtime.devices.spec import DeviceSpec
from pat_runtime import wire
from pat_runtime.transport.base import Coordinator
from pat_runtime.wire import DEFAULT_LIMITS, Limits, MessageType, WireError

from .driver import SocketDriver
from .identity import IdentityError, NodeIdentities, check_endpoint
from .options import DEFAULT_HWM, CurveServer, router_options

log = logging.getLogger(__name__)

class ZmqCoordinator(Coordinator):
    """ROUTER-socket coordinator. ``bind`` is a ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555``.

    ``timeout`` (s) is per attempt, ``retries`` the extra attempts (same request id), ``max_inflight`` the
    per-node pipelining cap, ``liveness`` the seconds without a heartbeat after which a node is dead.
    """

    def __init__(self, bind: str = "tcp://127.0.0.1:5555", *, curve: CurveServer | None = None,
                 liveness: float = 3.0, timeout: float = 10.0, retries: int = 2, max_inflight: int = 8,
                 hwm: int = DEFAULT_HWM, limits: Limits = DEFAULT_LIMITS,
                 context: zmq.asyncio.Context | None = None, insecure: bool = False, bundle: bool = True,
                 bundle_bytes: int = 256 * 1024, bundle_max: int = 64):
        super().__init__()
        check_endpoint(bind, curve, insecure, "coordinator")
        self.bind = bind
        self.curve = curve
        self._ids = NodeIdentities(curve.key_map() if curve is not None else None)
        self.liveness = float(liveness)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_inflight = int(max_inflight)
        self.hwm = int(hwm)
        self.limits = limits
        self.started = False
        self._own_ctx = context is None
        self._ctx = context
        self._sock: zmq.Socket | None = None
        self._driver: SocketDriver | None = None
        self._auth = None
        self._tasks: list[asyncio.Task] = []
        #: send requests queued for one node in one loop iteration as one bundle (to nodes that take them)
        self.bundle = bool(bundle)
        self.bundle_bytes = int(bundle_bytes)
        self.bundle_max = int(bundle_max)
        self._bundle_max: dict[str, int] = {}      # node -> most requests per bundle it takes (from its hello)
        self._outbox: dict[str, list] = {}         # node -> [Pending, ...] to send at the end of this iteration
        self._outbox_bytes: dict[str, int] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._burst: dict[str, int] = {}           # node -> replies in its last message (1, or a bundle's)

    # ----- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> "ZmqCoordinator":
        if self.started:
            return self
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        if self.curve is not None:
            from zmq.auth.asyncio import AsyncioAuthenticator

            self._auth = AsyncioAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve_callback("*", credentials_provider=self.curve)
        sock = zmq.Socket(self._ctx, zmq.ROUTER)  # driven by SocketDriver (reader callback), not futures
        router_options(sock, self.hwm, self.limits)
        if self.curve is not None:
            self.curve.apply(sock)
        try:
            sock.bind(self.bind)
        except zmq.ZMQError as e:
            sock.close(0)
            await self._teardown()
            raise DeviceConnectionError("coordinator", f"cannot bind {self.bind}: {e}") from None
        self._sock = sock
        self._driver = SocketDriver(sock, self._on_message).start()
        self.started = True
        self._tasks = [asyncio.create_task(self._liveness_loop(), name=f"zmq-coordinator-liveness {self.bind}")]
        return self

    async def close(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._outbox.clear()
        self._outbox_bytes.clear()
        await self._stop_tasks_and_requests()
        if self._driver is not None:
            self._driver.close()
            self._driver = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        await self._teardown()
        for n in list(self.nodes):
            self._node_left(n)

    async def _teardown(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
            await asyncio.sleep(0)  # let the cancelled ZAP task finish
        if self._own_ctx and self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None

    # ----- requests (the engine calls these) ---------------------------------------------------------
    def _encode(self, node_id: str, header: dict[str, Any], arrays: Sequence[Any]) -> tuple[list, int]:
        frames = wire.encode(header, arrays, self.limits)
        return [node_id.encode(), *frames], sum(memoryview(f).nbytes for f in frames)

    def _transmit(self, p) -> str | None:
        driver = self._driver
        if driver is None:
            raise DeviceConnectionError(p.node, "coordinator is closed")
        cap = min(self._bundle_max.get(p.node, 0), self.bundle_max) if self.bundle else 0
        # joins this iteration's bundle for the node -- unless it is the node's only request in flight and
        # the node's last reply came alone (window 1: no loop pass before the send)
        if cap > 1 and p.nbytes <= self.bundle_bytes and (
                p.node in self._outbox or self._inflight.get(p.node, 0) > 1
                or self._burst.get(p.node, 1) > 1):
            node = p.node
            box = self._outbox.get(node)
            if box is not None and (len(box) >= cap or self._outbox_bytes[node] + p.nbytes > self.bundle_bytes):
                self._flush_node(node)  # full: send it now, ``p`` starts the next one
                box = None
            if box is None:
                box = self._outbox[node] = []
                self._outbox_bytes[node] = 0
                if self._flush_handle is None:
                    self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
            box.append(p)
            self._outbox_bytes[node] += p.nbytes
            return None
        return self._send_one(driver, p)

    def _send_one(self, driver: SocketDriver, p) -> str | None:
        p.msg[0] = self._ids.route(p.node)  # the connection bound to the node now (it may have reconnected)
        return self._send_frames(driver, p.node, p.msg)

    def _send_frames(self, driver: SocketDriver, node: str, frames: list, copy: bool = False) -> str | None:
        """Send ``[route, ...]`` now: None when out, else why not (full queue, node not connected: retried);
        ``DeviceConnectionError`` for any other socket error."""
        try:
            if driver.send_nowait(frames, copy=copy):
                return None
            return f"send queue to node is full (high-water mark) on {self.bind}"
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                raise DeviceConnectionError(node, f"send failed: {e}") from None
            self.stats.unreachable += 1
            return f"node is not connected to {self.bind}"

    def _flush(self) -> None:
        """End of the loop iteration: send every node's queued requests (one bundle per node)."""
        self._flush_handle = None
        for node in list(self._outbox):
            self._flush_node(node)

    def _flush_node(self, node: str) -> None:
        box = self._outbox.pop(node, None)
        self._outbox_bytes.pop(node, None)
        live = [p for p in box or () if not p.finished]
        if not live:
            return
        driver = self._driver
        if driver is None:
            for p in live:
                self._fail(p, DeviceConnectionError(p.node, "coordinator is closed"))
            return
        try:
            if len(live) == 1:
                why = self._send_one(driver, live[0])
            else:
                frames = [self._ids.route(node), *wire.encode_bundle([p.msg[1:] for p in live])]
                why = self._send_frames(driver, node, frames, copy=True)
                if why is None:
                    self.stats.bundles += 1
                    self.stats.bundled += len(live)
        except DeviceConnectionError as e:
            for p in live:  # one error each (they are raised in different callers)
                self._fail(p, DeviceConnectionError(node, e.message))
            return
        if why is not None:
            for p in live:
                self._not_sent(p, why)

    # ----- receive side ------------------------------------------------------------------------------
    def _on_message(self, frames: list) -> None:
        stats = self.stats
        stats.recv_msgs += 1
        try:
            self._dispatch(frames)
        except Exception as e:  # a peer must never take the coordinator down
            stats.malformed += 1
            log.debug("dropped a malformed message: %s", e)

    def _dispatch(self, frames: list) -> None:
        stats = self.stats
        ident = frames[0].bytes
        if len(frames) < 2:
            raise WireError(ErrorCode.EMPTY, "no header frame")
        stats.bytes_in += sum(len(f) for f in frames[1:])
        header = wire.decode_header(frames[1], self.limits)
        t = header["type"]
        node = self._ids.node_of(ident)  # who this connection is (bound by an accepted hello), else None
        if t == MessageType.BUNDLE:
            if node is None:  # replies from no node answer no request of ours
                stats.rejected += 1
            else:
                self._on_bundle(node, frames[1:], header)
            return
        header, arrays = wire.decode(frames[1:], self.limits, header)
        if t == MessageType.HELLO:
            node = self._claim(ident, frames[1], header)
            if node is None:
                return
        elif node is None:  # not (yet) bound to a node id: only a heartbeat gets an answer ("say hello")
            if t == MessageType.HEARTBEAT:
                self._ask_hello(ident, str(header.get("node", "")))
            elif t == MessageType.REPLY:  # a reply from no node answers no request of ours
                stats.unmatched += 1
            else:
                stats.rejected += 1
            return
        if t == MessageType.REPLY:
            self._burst[node] = 1
            if self._resolve_reply(node, header, arrays):
                self._touch(node)
        elif t == MessageType.HEARTBEAT:
            info = self.nodes.get(node)
            if info is None or info.spec is None:
                self._ask_hello(ident, node)
            else:
                self._node_seen(node, **self._meta(header))
        elif t == MessageType.HELLO:
            spec = header.get("spec")
            if not isinstance(spec, dict):
                raise WireError(ErrorCode.BAD_HELLO, "hello without a spec")
            self._node_seen(node, spec=spec, **self._meta(header))
            n = header.get("bundle")
            if type(n) is int and n >= 2:
                self._bundle_max[node] = min(n, self.limits.max_bundle)
            else:  # an edge that does not take bundles (or restarted as an older version)
                self._bundle_max.pop(node, None)
        elif t == MessageType.BYE:
            self._node_left(node)
            self._fail_pending(node, "node left (bye)")
        else:
            log.debug("ignoring %r from %s", t, node)

    def _on_bundle(self, node: str, frames: list, header: dict[str, Any]) -> None:
        """A reply bundle from ``node``: every part is decoded and validated on its own; only replies."""
        stats = self.stats
        parts = wire.split_bundle(frames, self.limits, header)
        self._burst[node] = len(parts)
        matched = False
        for part in parts:
            try:
                h, arrays = wire.decode(part, self.limits)
                if h["type"] != MessageType.REPLY:
                    raise WireError(ErrorCode.BAD_HEADER, f"{h['type']!r} inside a bundle (only replies)")
            except Exception as e:  # noqa: BLE001 - one bad part costs only itself
                stats.malformed += 1
                log.debug("dropped a malformed bundle part from %s: %s", node, e)
                continue
            matched = self._resolve_reply(node, h, arrays) or matched
        if matched:
            self._touch(node)

    def _claim(self, ident: bytes, frame: zmq.Frame, header: dict[str, Any]) -> str | None:
        """Bind the node id a hello claims to this connection (:mod:`.identity`); None when refused."""
        node = header.get("node")
        spec = header.get("spec")
        if not isinstance(node, str) or not node or len(node) > 200:
            raise WireError(ErrorCode.BAD_HELLO, "hello without a node id")
        if not isinstance(spec, dict):
            raise WireError(ErrorCode.BAD_HELLO, "hello without a spec")
        DeviceSpec.from_dict(spec)  # validate before registering anything
        user = frame.get("User-Id") if self.curve is not None else None
        try:
            self._ids.claim(ident, node, user, self._holder_alive)
        except IdentityError as e:
            self.stats.rejected += 1
            log.warning("refused a hello: %s", e)
            self._send_refusal(ident, node, e)
            return None
        return node

    def _holder_alive(self, node: str) -> bool:
        """Is the connection bound to ``node`` still there (heartbeats within ``liveness`` and reachable)?

        Asking it for a hello doubles as the probe: ROUTER_MANDATORY raises EHOSTUNREACH for a closed
        connection, so a node restarted after a crash takes its id back at once.
        """
        if node not in self.alive_nodes():
            return False
        try:
            self._driver.send_nowait([self._ids.route(node), *wire.encode(wire.make_header(MessageType.HELLO,
                                                                                           node=node))])
        except zmq.ZMQError:
            return False
        return True

    def _send_refusal(self, ident: bytes, node: str, err: IdentityError) -> None:
        """Tell a refused connection why (an error reply it can log); never blocks, never raises."""
        try:
            self._driver.send_nowait([ident, *wire.encode(wire.error_header({"type": "hello"}, err.code, str(err),
                                                                              node))])
        except zmq.ZMQError:
            pass

    def _forget_node(self, node_id: str) -> None:
        super()._forget_node(node_id)
        self._bundle_max.pop(node_id, None)
        self._burst.pop(node_id, None)
        self._ids.forget(node_id)

    def _ask_hello(self, ident: bytes, node: str) -> None:
        """Answer a heartbeat from a node we do not know with ``hello``: the node re-sends its hello."""
        try:
            self._driver.send_nowait([ident, *wire.encode(wire.make_header(MessageType.HELLO, node=node))])
        except zmq.ZMQError:  # gone again: it will heartbeat again
            pass

    # ----- read-only views (tests, monitoring) -------------------------------------------------------
    def route_of(self, node_id: str) -> bytes | None:
        """The ZeroMQ routing id of the connection bound to ``node_id`` by an accepted hello (None: none)."""
        route = self._ids.route(node_id)
        return route if self._ids.node_of(route) == node_id else None

    def registry_sizes(self) -> dict[str, int]:
        """:meth:`Coordinator.registry_sizes` plus ``routes``: connections bound to a node id."""
        return {**super().registry_sizes(), "routes": len(self._ids)}
