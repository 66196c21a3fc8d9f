"""Wire format shared by every transport (see docs/protocol.md).

A message is a msgpack **header** (a dict) plus zero or more raw **array frames**. The header carries::

    v      protocol version (int, == VERSION)
    type   message type (str, see MessageType)
    id     request id (str; replies echo it; retries reuse it, which makes requests idempotent)
    node   node id (str)
    arrays [{"dtype": "float32", "shape": [B, N]}, ...]   one entry per array frame

ZeroMQ sends ``[header, *array_buffers]`` as separate frames (zero-copy for large arrays).
MQTT (one payload per message) uses :func:`pack` / :func:`unpack`:
``MAGIC | u32 header_len | header | array bytes...`` (arrays back to back, each 8-byte aligned).

Everything received is validated against strict limits; violations raise :class:`WireError` (a
``ValueError`` and a :class:`~pat_runtime.devices.errors.ProtocolError`) whose ``code`` goes into the error
reply. Every code is an :class:`ErrorCode` member (re-exported here; documented per member in
``devices/codes.py``): :func:`error_header` refuses anything else, so no free-string code reaches the wire.
Typed views of these messages (``Request`` / ``Reply``) are in :mod:`pat_runtime.protocol`.
"""
from __future__ import annotations

import math
import struct
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import msgpack
import numpy as np

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import DeviceError, ProtocolError

VERSION = 1
MAGIC = b"PAT1"

ALLOWED_DTYPES = frozenset({"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"})
# hot-path caches: ``dtype.name`` and ``np.dtype(str)`` cost microseconds each (native byte order only)
_DTYPE_NAME = {np.dtype(n): n for n in ALLOWED_DTYPES}
_DTYPE = {n: np.dtype(n) for n in ALLOWED_DTYPES}


class MessageType:
    HELLO = "hello"          # node -> coordinator: I am here, with my spec
    HEARTBEAT = "heartbeat"  # node -> coordinator, periodic
    BYE = "bye"              # node -> coordinator: clean shutdown
    SPEC = "spec"            # request: device spec
    APPLY = "apply"          # request: arrays [x, theta] -> [y]
    APPLY_MANY = "apply_many"  # request: arrays [x[C, B, in], theta[C, P]] -> [y[C, B, out]] (one θ per channel)
    PING = "ping"            # request: liveness / round trip
    STATUS = "status"        # request: node status and counters
    DEPLOY = "deploy"        # request: install a PNN artifact
    ROLLBACK = "rollback"    # request: go back to the previous artifact
    INFER = "infer"          # request: run the deployed PNN on arrays [x]
    REPLY = "reply"          # response to any request; header["ok"] tells success
    ERROR = "error"          # unsolicited error (e.g. unparseable message)
    BUNDLE = "bundle"        # ZeroMQ only: several whole messages in one multipart message (see encode_bundle)


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = 64 * 1024
    max_arrays: int = 16
    max_ndim: int = 4
    max_array_bytes: int = 256 * 1024 * 1024
    max_total_bytes: int = 512 * 1024 * 1024
    #: messages in one bundle (ZeroMQ); a bundle also counts against ``max_total_bytes`` as a whole
    max_bundle: int = 64


DEFAULT_LIMITS = Limits()


class WireError(ProtocolError, ValueError):
    """A malformed or over-limit message. ``code`` is its :class:`ErrorCode`; ``node`` (also ``where``) the
    peer when the raiser knows it (then the message starts with ``[node]``)."""

    def __init__(self, code: ErrorCode | str, message: str, node: str = ""):
        self.code = ErrorCode(code)
        self.message = message
        self.node = self.where = node
        # not super().__init__: a subclass may put DeviceError (another signature) next in the MRO
        ValueError.__init__(self, f"[{node}] {self.code}: {message}" if node else f"{self.code}: {message}")

    def __reduce__(self):
        return (self.__class__, (self.code, self.message, self.node))


class EncodeError(WireError, DeviceError):
    """A request for ``node`` that could not be encoded here (too many arrays, a dtype that cannot be sent, over
    a limit): nothing was sent. A local protocol error naming the node, never a :class:`RemoteDeviceError`; it
    stays a ``DeviceError`` (and a ``ValueError``) so per-node error handling keeps catching it."""

    def __init__(self, node: str, code: ErrorCode | str, message: str):
        WireError.__init__(self, code, f"request not sent: {message}", node)
        self.device = node

    def __reduce__(self):
        return (self.__class__, (self.node, self.code, self.message.removeprefix("request not sent: ")))


def new_id() -> str:
    return uuid.uuid4().hex


def _dtype_name(dt: np.dtype) -> str:
    name = _DTYPE_NAME.get(dt)
    return name if name is not None else dt.name


def _array_meta(a: np.ndarray) -> dict[str, Any]:
    return {"dtype": _dtype_name(a.dtype), "shape": list(a.shape)}


def _as_wire_array(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if _dtype_name(a.dtype) not in ALLOWED_DTYPES:
        raise WireError(ErrorCode.BAD_DTYPE, f"dtype {a.dtype} cannot be sent")
    if not a.dtype.isnative:  # the wire is little-endian / native: never send foreign byte order raw
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a


def make_header(type: str, id: str | None = None, node: str = "", **fields: Any) -> dict[str, Any]:
    h = {"v": VERSION, "type": type, "id": id or new_id(), "node": node}
    h.update(fields)
    return h


def reply_header(request: dict[str, Any], node: str = "", ok: bool = True, **fields: Any) -> dict[str, Any]:
    return make_header(MessageType.REPLY, id=str(request.get("id", "")), node=node, ok=ok,
                       re=request.get("type"), **fields)


def error_header(request: dict[str, Any] | None, code: ErrorCode, message: str, node: str = "") -> dict[str, Any]:
    """An error reply to ``request``. ``code`` must be an :class:`ErrorCode` (a member's string is accepted;
    any other value raises ``ValueError``: a code outside the enum cannot reach the wire)."""
    code = ErrorCode(code)
    request = request or {}
    rid = request.get("id") if isinstance(request.get("id"), str) else ""
    return make_header(MessageType.REPLY, id=rid, node=node, ok=False,
                       re=request.get("type") if isinstance(request.get("type"), str) else None,
                       error={"code": code, "message": message[:2000]})


def encode(header: dict[str, Any], arrays: Sequence[Any] = (), limits: Limits = DEFAULT_LIMITS) -> list:
    """Header + arrays -> frames ``[header_bytes, buf, buf, ...]`` (array buffers are not copied)."""
    arrs = [_as_wire_array(a) for a in arrays]
    if len(arrs) > limits.max_arrays:
        raise WireError(ErrorCode.TOO_MANY_ARRAYS, f"{len(arrs)} arrays > {limits.max_arrays}")
    h = dict(header)
    h["v"] = VERSION
    h["arrays"] = [_array_meta(a) for a in arrs]
    hb = msgpack.packb(h, use_bin_type=True)
    if len(hb) > limits.max_header_bytes:
        raise WireError(ErrorCode.HEADER_TOO_LARGE, f"{len(hb)} bytes > {limits.max_header_bytes}")
    for a in arrs:
        if a.nbytes > limits.max_array_bytes:
            raise WireError(ErrorCode.ARRAY_TOO_LARGE, f"{a.nbytes} bytes > {limits.max_array_bytes}")
    return [hb, *[memoryview(a).cast("B") if a.nbytes else b"" for a in arrs]]


def decode_header(hb: Any, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    hb = bytes(hb) if not isinstance(hb, (bytes, bytearray)) else hb
    if len(hb) > limits.max_header_bytes:
        raise WireError(ErrorCode.HEADER_TOO_LARGE, f"{len(hb)} bytes > {limits.max_header_bytes}")
    try:
        h = msgpack.unpackb(hb, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises many types
        raise WireError(ErrorCode.BAD_HEADER, f"header is not valid msgpack: {type(e).__name__}") from None
    if not isinstance(h, dict):
        raise WireError(ErrorCode.BAD_HEADER, "header is not a map")
    v = h.get("v")
    if type(v) is not int or v != VERSION:  # exact: 1.0 and True compare equal to 1 but are not version 1
        raise WireError(ErrorCode.BAD_VERSION, f"protocol version {h.get('v')!r}, expected {VERSION}")
    if not isinstance(h.get("type"), str):
        raise WireError(ErrorCode.BAD_HEADER, "header has no string 'type'")
    if not isinstance(h.get("id", ""), str):
        raise WireError(ErrorCode.BAD_HEADER, "header 'id' must be a string")
    metas = h.get("arrays", [])
    if not isinstance(metas, list) or len(metas) > limits.max_arrays:
        raise WireError(ErrorCode.BAD_HEADER, "'arrays' must be a list of at most %d entries" % limits.max_arrays)
    return h


def _meta_nbytes(meta: Any, limits: Limits) -> tuple[np.dtype, tuple[int, ...], int]:
    if not isinstance(meta, dict):
        raise WireError(ErrorCode.BAD_HEADER, "array entry is not a map")
    dt, shape = meta.get("dtype"), meta.get("shape")
    if not isinstance(dt, str) or dt not in ALLOWED_DTYPES:
        raise WireError(ErrorCode.BAD_DTYPE, f"dtype {dt!r} not allowed")
    if (not isinstance(shape, list) or len(shape) > limits.max_ndim
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**40 for s in shape)):
        raise WireError(ErrorCode.BAD_SHAPE, f"shape {shape!r} invalid (at most {limits.max_ndim} non-negative ints)")
    dtype = _DTYPE[dt]
    n = math.prod(shape) * dtype.itemsize
    if n > limits.max_array_bytes:
        raise WireError(ErrorCode.ARRAY_TOO_LARGE, f"{n} bytes > {limits.max_array_bytes}")
    return dtype, tuple(shape), n


def decode(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS,
           header: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Frames -> (header, arrays). Arrays are read-only views of the frames (zero-copy). ``header``: the
    result of :func:`decode_header` on ``frames[0]`` when the caller already has it."""
    if not frames:
        raise WireError(ErrorCode.EMPTY, "no frames")
    h = decode_header(frames[0], limits) if header is None else header
    metas = h.get("arrays", [])
    bufs = frames[1:]
    if len(bufs) != len(metas):
        raise WireError(ErrorCode.FRAME_COUNT, f"header declares {len(metas)} arrays but {len(bufs)} frames follow")
    arrays, total = [], 0
    for meta, buf in zip(metas, bufs):
        dtype, shape, n = _meta_nbytes(meta, limits)
        mv = memoryview(getattr(buf, "buffer", buf))
        if mv.nbytes != n:
            raise WireError(ErrorCode.SIZE_MISMATCH, f"array {shape} {dtype} needs {n} bytes, frame has {mv.nbytes}")
        total += n
        if total > limits.max_total_bytes:
            raise WireError(ErrorCode.TOO_LARGE, f"message exceeds {limits.max_total_bytes} bytes")
        arrays.append(np.frombuffer(mv, dtype=dtype).reshape(shape))
    return h, arrays


def encode_bundle(messages: Sequence[Sequence[Any]]) -> list:
    """Whole encoded messages (each ``[header, *array_buffers]``, from :func:`encode`) -> the two frames of
    ONE bundle message ``[bundle_header, body]``.

    ``body`` holds every frame of every message back to back (one copy: bundles are meant for small
    messages, which ZeroMQ copies anyway); the bundle header ``{v, type: "bundle", parts: [[bytes of each
    frame of message 1], ...]}`` says where they lie. Every part stays a complete message with its own header,
    id and arrays, decoded and validated on its own (:func:`split_bundle` + :func:`decode`)."""
    parts, chunks = [], []
    for m in messages:
        parts.append([memoryview(f).nbytes for f in m])
        chunks.extend(m)
    hb = msgpack.packb({"v": VERSION, "type": MessageType.BUNDLE, "parts": parts}, use_bin_type=True)
    return [hb, b"".join(chunks)]


def split_bundle(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS,
                 header: dict[str, Any] | None = None) -> list[list]:
    """Frames of a bundle -> the frame lists (zero-copy memoryviews) of its messages, not decoded yet:
    :func:`decode` each one, so a malformed message costs only its own reply. Raises :class:`WireError` for a
    malformed or oversized bundle: exactly ``[header, body]``, at most ``limits.max_bundle`` messages of at
    most ``limits.max_arrays + 1`` frames each, frame sizes that add up to the body, ``max_total_bytes`` in all."""
    if not frames:
        raise WireError(ErrorCode.EMPTY, "no frames")
    h = decode_header(frames[0], limits) if header is None else header
    if h.get("type") != MessageType.BUNDLE:
        raise WireError(ErrorCode.BAD_HEADER, f"not a bundle: {h.get('type')!r}")
    if len(frames) != 2:
        raise WireError(ErrorCode.FRAME_COUNT, f"a bundle is [header, body], got {len(frames)} frames")
    if h.get("arrays"):
        raise WireError(ErrorCode.BAD_HEADER, "a bundle header declares no arrays of its own")
    parts = h.get("parts")
    if not isinstance(parts, list) or not parts:
        raise WireError(ErrorCode.BAD_HEADER, "bundle without a 'parts' list")
    if len(parts) > limits.max_bundle:
        raise WireError(ErrorCode.TOO_LARGE, f"bundle of {len(parts)} messages > {limits.max_bundle}")
    body = memoryview(getattr(frames[1], "buffer", frames[1])).cast("B")
    if body.nbytes > limits.max_total_bytes:
        raise WireError(ErrorCode.TOO_LARGE, f"bundle exceeds {limits.max_total_bytes} bytes")
    out, off, most = [], 0, limits.max_arrays + 1
    for sizes in parts:
        if not isinstance(sizes, list) or not 1 <= len(sizes) <= most:
            raise WireError(ErrorCode.BAD_HEADER, f"a bundle part must list 1..{most} frame sizes")
        msg = []
        for n in sizes:
            if type(n) is not int or n < 0 or off + n > body.nbytes:
                raise WireError(ErrorCode.SIZE_MISMATCH, "bundle frame sizes do not fit its body")
            msg.append(body[off: off + n])
            off += n
        out.append(msg)
    if off != body.nbytes:
        raise WireError(ErrorCode.SIZE_MISMATCH, f"{body.nbytes - off} bytes in the bundle body belong to no part")
    return out


def pack(header: dict[str, Any], arrays: Sequence[Any] = (), limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Header + arrays -> one payload (for transports with a single payload per message, e.g. MQTT)."""
    frames = encode(header, arrays, limits)
    hb = frames[0]
    parts = [MAGIC, struct.pack("<I", len(hb)), hb]
    off = len(MAGIC) + 4 + len(hb)
    for buf in frames[1:]:
        pad = (-off) % 8
        parts.append(b"\0" * pad)
        parts.append(buf)
        off += pad + memoryview(buf).nbytes
    return b"".join(parts)


def unpack(payload: Any, limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Inverse of :func:`pack`; arrays are zero-copy views of ``payload``."""
    mv = memoryview(payload).cast("B")
    if mv.nbytes < len(MAGIC) + 4 or bytes(mv[: len(MAGIC)]) != MAGIC:
        raise WireError(ErrorCode.BAD_MAGIC, "payload does not start with the PAT1 magic")
    if mv.nbytes > limits.max_total_bytes + limits.max_header_bytes:
        raise WireError(ErrorCode.TOO_LARGE, "payload too large")
    (hlen,) = struct.unpack_from("<I", mv, len(MAGIC))
    off = len(MAGIC) + 4
    if hlen > limits.max_header_bytes or off + hlen > mv.nbytes:
        raise WireError(ErrorCode.BAD_HEADER, f"header length {hlen} invalid")
    h = decode_header(mv[off: off + hlen], limits)
    off += hlen
    arrays = []
    for meta in h.get("arrays", []):
        dtype, shape, n = _meta_nbytes(meta, limits)
        off += (-off) % 8
        if off + n > mv.nbytes:
            raise WireError(ErrorCode.SIZE_MISMATCH, "payload shorter than its declared arrays")
        arrays.append(np.frombuffer(mv[off: off + n], dtype=dtype).reshape(shape))
        off += n
    if off != mv.nbytes:
        raise WireError(ErrorCode.SIZE_MISMATCH, f"{mv.nbytes - off} trailing bytes after the declared arrays")
    return h, arrays
