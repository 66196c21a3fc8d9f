"""Live sources of labelled samples for streaming training, with exactly-once processing across restarts.

Every message of a stream is a :class:`Sample`: a mini-batch ``x[B, F]``, labels ``y[B]`` and a
**sequence number** ``seq`` (0, 1, 2, ...) given by the producer. Sources deliver *at least once* and in
producer order; duplicates (redeliveries after a reconnect or a restart) are possible. The trainer makes
processing *exactly once* with a :class:`SeqTracker`: a sample is used only if its ``seq`` was not processed
yet, and the tracker's ``offset`` (every ``seq < offset`` is done) goes into each checkpoint. After a restart
the source is started at that offset.

Sources (async iterators of :class:`Sample`)::

    IteratorSource(factory)      factory(start) -> async iterator of Sample | (x, y); seekable replay
    task_stream(x, y, ...)       deterministic, seekable labelled stream over a dataset (cycles epochs)
    MqttSource(url, spool_dir)   an MQTT topic (QoS 1, persistent session, manual acks + local spool)

MQTT delivery protocol: the source subscribes with QoS 1 on a *persistent* session (fixed client id,
``clean_session=False``), so the broker queues messages while the trainer is down. Each message is first
appended to a local **spool** (``spool.log``, fsynced) and only then acknowledged (PUBACK, manual ack): a
message the broker considers delivered is always on disk. :meth:`Source.commit` (called after a checkpoint)
drops spooled records below the checkpoint offset, so the spool holds only samples newer than the last
checkpoint. On restart the spooled records ``>= offset`` are replayed first, then live messages follow.

Message payload: :func:`pat_runtime.wire.pack` of header ``{"type": "sample", "seq": n}`` with arrays
``[x (float32 [B, F] or [F]), y (int [B] or scalar)]``; or JSON ``{"seq": n, "x": [...], "y": [...]}``.
"""
from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable
from urllib.parse import unquote

import numpy as np

from pat_runtime.devices import Backoff
from pat_runtime.devices.uri import parse_uri
from pat_runtime.transport.mqtt.credentials import resolve_credentials
from .deadletter import FILENAME as DEAD_LETTER_FILE
from .deadletter import DeadLetter
from pat_runtime.wire import WireError, make_header, pack, unpack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One stream message: a labelled mini-batch with the producer's sequence number."""

    seq: int
    x: np.ndarray  # float32 [B, F]
    y: np.ndarray  # int64 [B]
    #: why this message cannot be used (it did not decode); the trainer dead-letters it and moves on
    poison: str | None = None

    @staticmethod
    def poisoned(seq: int, reason: str) -> "Sample":
        return Sample(int(seq), np.zeros((0, 0), np.float32), np.zeros(0, np.int64), reason)

    @staticmethod
    def make(seq: int, x: Any, y: Any) -> "Sample":
        x = np.array(x, np.float32)  # a writable copy (wire arrays are read-only views)
        y = np.asarray(y).astype(np.int64)
        if x.ndim == 1:
            x = x[None]
        y = y.reshape(-1)
        if x.ndim != 2 or y.shape[0] != x.shape[0] or x.shape[0] == 0:
            raise ValueError(f"sample {seq}: need x[B, F] and y[B], got {x.shape} and {y.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"sample {seq}: x contains NaN or inf")
        return Sample(int(seq), x, y)


class SeqTracker:
    """Exactly-once bookkeeping: ``offset`` = every seq below it is processed; ``ahead`` = processed seqs above.

    A seq that never arrives would hold ``offset`` back forever; once more than ``max_ahead`` later seqs are
    processed, the missing ones are given up (counted in ``gaps``) so memory stays bounded.
    """

    def __init__(self, offset: int = 0, max_ahead: int = 10_000):
        self.offset = int(offset)
        self.ahead: set[int] = set()
        self.max_ahead = int(max_ahead)
        self.gaps = 0
        self.duplicates = 0

    def seen(self, seq: int) -> bool:
        return seq < self.offset or seq in self.ahead

    def accept(self, seq: int) -> bool:
        """True (and mark it processed) if ``seq`` is new; False for a duplicate."""
        if self.seen(seq):
            self.duplicates += 1
            return False
        self.ahead.add(int(seq))
        while self.offset in self.ahead:
            self.ahead.discard(self.offset)
            self.offset += 1
        if len(self.ahead) > self.max_ahead:
            lowest = min(self.ahead)
            log.warning("stream gap: seqs %d..%d never arrived; skipping them", self.offset, lowest - 1)
            self.gaps += lowest - self.offset
            self.offset = lowest
            while self.offset in self.ahead:
                self.ahead.discard(self.offset)
                self.offset += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "ahead": sorted(self.ahead), "gaps": self.gaps,
                "duplicates": self.duplicates}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.offset = int(st["offset"])
        self.ahead = {int(s) for s in st.get("ahead", [])}
        self.gaps = int(st.get("gaps", 0))
        self.duplicates = int(st.get("duplicates", 0))


class Source(abc.ABC):
    """An async iterator of :class:`Sample` (at least once, producer order), started at an offset."""

    @abc.abstractmethod
    async def start(self, offset: int = 0) -> "Source":
        """Open the source so that iteration begins at (or before) sequence number ``offset``."""

    async def commit(self, offset: int) -> None:
        """Every seq below ``offset`` is durably processed (checkpointed); the source may forget them."""

    async def close(self) -> None:
        """Release connections (idempotent)."""

    def __aiter__(self) -> "Source":
        return self

    @abc.abstractmethod
    async def __anext__(self) -> Sample: ...

    async def __aenter__(self) -> "Source":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class IteratorSource(Source):
    """Wraps ``factory(start) -> async iterator`` yielding :class:`Sample` or ``(x, y)`` pairs.

    Items without a seq are numbered ``start, start+1, ...``. For an iterator that cannot seek, pass
    ``seekable=False``: it is restarted from the beginning and items with ``seq < start`` are skipped.
    """

    def __init__(self, factory: Callable[[int], AsyncIterator[Any] | Iterable[Any]], seekable: bool = True):
        self.factory = factory
        self.seekable = seekable
        self._it: AsyncIterator[Any] | None = None
        self._next_seq = 0
        self._min = 0

    async def start(self, offset: int = 0) -> "IteratorSource":
        it = self.factory(offset if self.seekable else 0)
        self._it = it.__aiter__() if hasattr(it, "__aiter__") else _aiter_sync(it)
        self._next_seq = offset if self.seekable else 0
        self._min = int(offset)
        return self

    async def __anext__(self) -> Sample:
        if self._it is None:
            raise RuntimeError("call `await source.start(offset)` first")
        while True:
            item = await self._it.__anext__()
            s = item if isinstance(item, Sample) else Sample.make(self._next_seq, *item)
            self._next_seq = s.seq + 1
            if s.seq >= self._min:  # a non-seekable iterator replays from 0: skip what is done
                return s

    async def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "aclose"):
            await it.aclose()


async def _aiter_sync(it: Iterable[Any]) -> AsyncIterator[Any]:
    for item in it:
        yield item


def task_stream(x: np.ndarray, y: np.ndarray, batch_size: int = 32, seed: int = 0,
                limit: int | None = None, rate: float | None = None) -> Callable[[int], AsyncIterator[Sample]]:
    """A seekable labelled stream over a dataset, for :class:`IteratorSource`.

    Message ``seq`` holds batch ``seq % per_epoch`` of epoch ``seq // per_epoch`` with
    ``per_epoch = len(x) // batch_size`` and the epoch's order ``default_rng([seed, epoch]).permutation``,
    so any offset can be re-created exactly. ``limit`` ends the stream after that many messages,
    ``rate`` (messages per second) paces it like a live sensor.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64)
    per_epoch = len(x) // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the {len(x)} samples")

    async def gen(start: int) -> AsyncIterator[Sample]:
        seq = start
        perm, perm_epoch = None, -1
        while limit is None or seq < limit:
            epoch, k = divmod(seq, per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = np.random.default_rng([seed, epoch]).permutation(len(x)), epoch
            sel = perm[k * batch_size:(k + 1) * batch_size]
            yield Sample(seq, x[sel], y[sel])
            seq += 1
            if rate:
                await asyncio.sleep(1.0 / rate)
            else:
                await asyncio.sleep(0)

    return gen


# ----- MQTT -------------------------------------------------------------------------------------------------
def encode_sample(seq: int, x: Any, y: Any) -> bytes:
    """Payload of one sample message (wire format)."""
    return pack(make_header("sample", seq=int(seq)), [np.asarray(x, np.float32), np.asarray(y, np.int64)])


def decode_sample(payload: bytes) -> Sample:
    """Parse a sample message (wire format or JSON); raises ValueError with the reason."""
    if payload[:4] == b"PAT1":
        h, arrays = unpack(payload)
        if h.get("type") != "sample" or not isinstance(h.get("seq"), int) or len(arrays) != 2:
            raise ValueError("sample message needs type 'sample', an int 'seq' and arrays [x, y]")
        return Sample.make(h["seq"], arrays[0], arrays[1])
    try:
        d = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"sample payload is neither wire format nor JSON: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("seq"), int) or "x" not in d or "y" not in d:
        raise ValueError("JSON sample needs an int 'seq', 'x' and 'y'")
    return Sample.make(d["seq"], d["x"], d["y"])


def peek_seq(payload: bytes) -> int | None:
    """The sequence number of a sample message that does not decode as a sample, if it has one."""
    try:
        h = unpack(payload)[0] if payload[:4] == b"PAT1" else json.loads(payload)
    except (ValueError, RecursionError):
        return None
    seq = h.get("seq") if isinstance(h, dict) else None
    return seq if type(seq) is int and seq >= 0 else None


@dataclass(frozen=True)
class MqttUrl:
    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def parse(url: str) -> "MqttUrl":
        """``mqtt://[user@]host[:port]/topic/path[?credentials=FILE]`` (port 1883 by default).

        Credentials: see :mod:`pat_runtime.transport.mqtt.credentials` (file or environment; a password in the
        URL works but is warned about).
        """
        u = parse_uri(url, what="stream source")
        if u.scheme not in ("mqtt", "tcp") or not u.host or not u.path:
            raise ValueError(f"expected mqtt://HOST:PORT/TOPIC, got {u.redacted!r}")
        return MqttUrl(u.host, u.port or 1883, unquote(u.raw_path.lstrip("/")), u.username or None,
                       u.password or None, u.query)

    def login(self) -> dict[str, str | None]:
        """``username`` / ``password`` keywords for ``aiomqtt.Client`` (URL, credentials file, environment)."""
        c = resolve_credentials(self.username, self.password, dict(self.options),
                                where=f"mqtt://{self.host}:{self.port}")
        return {"username": c.username, "password": c.password}


class Spool:
    """Append-only journal of raw sample payloads: records ``<u32 len><u64 seq><payload>``.

    A torn last record (crash mid-append) is ignored on reading.
    """

    HDR = struct.Struct("<IQ")

    def __init__(self, path: Path, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = None

    def records(self) -> list[tuple[int, bytes]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        out, off = [], 0
        while off + self.HDR.size <= len(data):
            n, seq = self.HDR.unpack_from(data, off)
            if off + self.HDR.size + n > len(data):
                break
            out.append((seq, data[off + self.HDR.size: off + self.HDR.size + n]))
            off += self.HDR.size + n
        return out

    def append(self, seq: int, payload: bytes) -> None:
        if self._f is None:
            self._f = open(self.path, "ab")
        self._f.write(self.HDR.pack(len(payload), int(seq)) + payload)
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def truncate_below(self, offset: int) -> None:
        """Keep only records with ``seq >= offset`` (atomic rewrite)."""
        from pat_runtime.artifact import atomic_write

        keep = [(s, p) for s, p in self.records() if s >= offset]
        self.close()
        atomic_write(self.path, b"".join(self.HDR.pack(len(p), s) + p for s, p in keep))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class MqttSource(Source):
    """Labelled samples from an MQTT topic; see the module docstring for the delivery protocol."""

    def __init__(self, url: str, spool_dir: str | Path, client_id: str | None = None, qos: int = 1,
                 fsync: bool = True, reconnect_delay: float = 0.5, connect_timeout: float = 10.0,
                 on_subscribed: Callable[[str], None] | None = None):
        self.url = MqttUrl.parse(url)
        #: called with the topic each time the subscription is in place (first connect and reconnects)
        self.on_subscribed = on_subscribed
        self.client_id = client_id or ("pat-stream-" + self.url.topic.replace("/", "-").replace("#", "all")
                                       .replace("+", "any"))
        self.qos = qos
        self.spool = Spool(Path(spool_dir) / "spool.log", fsync=fsync)
        self.dead_letter = DeadLetter(Path(spool_dir) / DEAD_LETTER_FILE)
        self.reconnect_delay = reconnect_delay
        self.connect_timeout = connect_timeout
        self._client = None
        self._pending: deque[Sample] = deque()
        self._offset = 0
        self._spooled: set[int] = set()
        self._closed = False
        self.counters = {"received": 0, "malformed": 0, "duplicates": 0, "reconnects": 0, "replayed": 0}

    async def start(self, offset: int = 0) -> "MqttSource":
        self._closed = False
        self._offset = int(offset)
        self._pending.clear()
        self._spooled.clear()
        for seq, payload in sorted(self.spool.records(), key=lambda r: r[0]):
            if seq >= offset and seq not in self._spooled:
                try:
                    self._pending.append(decode_sample(payload))
                except (ValueError, WireError) as e:  # a poison sample spooled before the last crash
                    self._pending.append(Sample.poisoned(seq, f"unusable sample message: {e}"))
                self._spooled.add(seq)
        self.counters["replayed"] += len(self._pending)
        await self._connect()
        return self

    @property
    def connected(self) -> bool:
        """Subscribed to the broker (samples published from now on reach this source)."""
        return self._client is not None

    async def _connect(self) -> None:
        import aiomqtt

        client = aiomqtt.Client(self.url.host, self.url.port, **self.url.login(), identifier=self.client_id,
                                clean_session=False, timeout=self.connect_timeout)
        client._client.manual_ack_set(True)  # PUBACK only after the message is in the spool
        await client.__aenter__()
        try:
            await client.subscribe(self.url.topic, qos=self.qos)
        except BaseException:
            await client.__aexit__(None, None, None)
            raise
        self._client = client
        if self.on_subscribed is not None:
            self.on_subscribed(self.url.topic)

    async def __anext__(self) -> Sample:
        if self._pending:
            return self._pending.popleft()
        import aiomqtt

        while True:
            if self._client is None:
                raise StopAsyncIteration
            try:
                msg = await anext(self._client.messages)
            except aiomqtt.MqttError as e:
                log.warning("MQTT source lost its connection (%s); reconnecting", e)
                await self._reconnect()
                continue
            sample = self._accept(msg)
            if sample is not None:
                return sample

    def _accept(self, msg) -> Sample | None:
        self.counters["received"] += 1
        payload = bytes(msg.payload)
        try:
            sample = decode_sample(payload)
        except (ValueError, WireError) as e:
            self.counters["malformed"] += 1
            seq = peek_seq(payload)
            if seq is None:  # no sequence number: nothing to account for, dead-letter it here
                self.dead_letter.add(None, f"unusable sample message: {e}", payload=payload, source=str(msg.topic))
                self._ack(msg)
                return None
            sample = Sample.poisoned(seq, f"unusable sample message: {e}")  # the trainer dead-letters it
        if sample.seq < self._offset or sample.seq in self._spooled:
            self.counters["duplicates"] += 1
            self._ack(msg)
            return None
        self.spool.append(sample.seq, payload)
        self._spooled.add(sample.seq)
        self._ack(msg)
        return sample

    def _ack(self, msg) -> None:
        if msg.qos > 0 and self._client is not None:
            self._client._client.ack(msg.mid, msg.qos)

    async def _reconnect(self) -> None:
        old, self._client = self._client, None
        if old is not None:
            try:
                await old.__aexit__(None, None, None)
            except Exception:
                pass
        backoff = Backoff(self.reconnect_delay, max(5.0, self.reconnect_delay))   # jittered, exponential
        while not self._closed:
            await asyncio.sleep(backoff.next())
            try:
                await self._connect()
                self.counters["reconnects"] += 1
                return
            except Exception as e:
                log.warning("MQTT reconnect failed: %s", e)

    async def commit(self, offset: int) -> None:
        self._offset = max(self._offset, int(offset))
        self.spool.truncate_below(self._offset)
        self._spooled = {s for s in self._spooled if s >= self._offset}

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except Exception as e:  # already disconnected
                log.debug("MQTT source close: %s", e)
        self.spool.close()


async def publish_samples(url: str, samples: Iterable[Sample], qos: int = 1, client_id: str | None = None) -> int:
    """Publish samples to the topic of ``url`` (a producer for tests, demos and ``pat stream --publish``)."""
    import aiomqtt

    u = MqttUrl.parse(url)
    n = 0
    async with aiomqtt.Client(u.host, u.port, **u.login(), identifier=client_id) as client:
        for s in samples:
            await client.publish(u.topic, encode_sample(s.seq, s.x, s.y), qos=qos)
            n += 1
    return n
