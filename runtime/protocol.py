"""Typed messages over the wire format (Flower style): :class:`Request`, :class:`Reply`, and the error a handler
raises to answer with a code (:class:`RequestError`).

A node's handler receives a :class:`Request` and returns a :class:`Reply` (or raises)::

    async def h_infer(req: Request) -> Reply:
        if len(req.arrays) != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, f"infer needs 1 array [x], got {len(req.arrays)}")
        return req.reply([y], model_version="3")          # ok reply: fields go into the header
        # or: return req.error_reply(ErrorCode.NO_MODEL, "nothing is deployed")

    service.register("infer", h_infer)

The coordinator maps every reply through :meth:`Reply.from_wire`; :meth:`Reply.exception` is the one place
an error reply becomes an exception (``expired`` -> :class:`DeviceTimeoutError`, anything else ->
:class:`RemoteDeviceError` with the node's :class:`ErrorCode`).

The wire stays the dicts of :mod:`pat_runtime.wire` (:meth:`Request.to_wire`, :meth:`Reply.to_wire` build
exactly the headers ``make_header`` / ``reply_header`` / ``error_header`` build), so peers without these
types see no difference.
"""
from __future__ import annotations

from typing import Any, Sequence

from pat_runtime.artifact_errors import ArtifactError
from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import (DeviceError, DeviceTimeoutError, OutOfRangeError, PatError, ProtocolError,
                                        RemoteDeviceError, ShapeError)
from pat_runtime.wire import MessageType, WireError, error_header, make_header, reply_header

#: header keys that are not request fields
_ENVELOPE = frozenset({"v", "type", "id", "node", "arrays"})


class RequestError(ProtocolError):
    """Raise from a node's handler to answer with an error reply carrying ``code`` (an :class:`ErrorCode`).

    ``str(e)`` is the reply's message; the node id is added by the reply (and the coordinator's
    :class:`RemoteDeviceError` names it)."""

    def __init__(self, code: ErrorCode | str, message: str):
        self.code = ErrorCode(code)
        self.message = message
        super().__init__(message)

    def __reduce__(self):
        return (self.__class__, (self.code, self.message))


def reply_code(exc: BaseException) -> ErrorCode:
    """The code a node answers with when a handler raises ``exc`` (a bug: :attr:`ErrorCode.INTERNAL`)."""
    if isinstance(exc, (RequestError, WireError, ArtifactError)):
        return exc.code
    if isinstance(exc, OutOfRangeError):
        return ErrorCode.OUT_OF_RANGE
    if isinstance(exc, ShapeError):
        return ErrorCode.BAD_SHAPE
    if isinstance(exc, DeviceError):
        return ErrorCode.DEVICE_ERROR
    return ErrorCode.INTERNAL


class Request:
    """One request: ``type``, ``id``, ``node`` (the addressee), its header ``fields`` and its ``arrays``.

    On a node it is built from the decoded message (:meth:`from_wire`, no copies); ``header`` is that dict.
    """

    __slots__ = ("type", "id", "node", "header", "arrays")

    def __init__(self, type: str, arrays: Sequence[Any] = (), *, id: str | None = None, node: str = "",
                 **fields: Any):
        self.header = make_header(type, id=id, node=node, **fields)
        self.type, self.id, self.node = type, self.header["id"], node
        self.arrays = list(arrays)

    @classmethod
    def from_wire(cls, header: dict[str, Any], arrays: Sequence[Any]) -> "Request":
        req = cls.__new__(cls)
        req.header, req.arrays = header, arrays if isinstance(arrays, list) else list(arrays)
        req.type, req.id, req.node = header.get("type"), header.get("id") or "", header.get("node", "")
        return req

    def to_wire(self) -> tuple[dict[str, Any], list[Any]]:
        return self.header, self.arrays

    @property
    def fields(self) -> dict[str, Any]:
        """The header's fields beyond the envelope (``v``, ``type``, ``id``, ``node``, ``arrays``)."""
        return {k: v for k, v in self.header.items() if k not in _ENVELOPE}

    def get(self, key: str, default: Any = None) -> Any:
        """A header field (``req.get("to")``)."""
        return self.header.get(key, default)

    def reply(self, arrays: Sequence[Any] = (), **fields: Any) -> "Reply":
        """The ok reply to this request: ``fields`` go into its header, ``arrays`` after it."""
        return Reply(True, arrays, fields=fields, request=self.header)

    def error_reply(self, code: ErrorCode, message: str) -> "Reply":
        """The error reply to this request (``code`` must be an :class:`ErrorCode`)."""
        return Reply(False, (), code=ErrorCode(code), message=message, request=self.header)

    def __repr__(self) -> str:
        return f"Request({self.type!r}, id={self.id!r}, node={self.node!r}, arrays={len(self.arrays)})"


class Reply:
    """One reply: ``ok``; for an error its ``code`` (:class:`ErrorCode`) and ``message``; ``arrays``, the
    replying ``node`` and the header ``fields``.

    Made on a node by :meth:`Request.reply` / :meth:`Request.error_reply`; read on a coordinator with
    :meth:`from_wire` (then ``header`` is the received dict).
    """

    __slots__ = ("ok", "code", "message", "arrays", "node", "fields", "request", "header")

    def __init__(self, ok: bool = True, arrays: Sequence[Any] = (), *, code: ErrorCode | None = None,
                 message: str = "", node: str = "", fields: dict[str, Any] | None = None,
                 request: dict[str, Any] | None = None):
        self.ok = bool(ok)
        self.code = None if ok else ErrorCode(code if code is not None else ErrorCode.REMOTE)
        self.message = message
        self.arrays = list(arrays)
        self.node = node
        self.fields = fields if fields is not None else {}
        self.request = request
        self.header: dict[str, Any] | None = None

    @classmethod
    def from_wire(cls, header: dict[str, Any], arrays: Sequence[Any]) -> "Reply":
        """A received reply. An unknown or missing error code becomes :attr:`ErrorCode.REMOTE` (the received
        code is kept at the front of ``message``)."""
        r = cls.__new__(cls)
        r.header, r.arrays, r.request = header, arrays if isinstance(arrays, list) else list(arrays), None
        r.node, r.fields = str(header.get("node", "")), header
        r.ok = bool(header.get("ok", False))
        if r.ok:
            r.code, r.message = None, ""
            return r
        err = header.get("error") if isinstance(header.get("error"), dict) else {}
        raw, r.message = err.get("code", ErrorCode.REMOTE), str(err.get("message", "error reply"))
        r.code = ErrorCode.lookup(raw)
        if r.code is None:
            r.code, r.message = ErrorCode.REMOTE, f"{str(raw)[:100]}: {r.message}"
        return r

    def to_wire(self, node: str | None = None) -> tuple[dict[str, Any], list[Any]]:
        """``(header, arrays)`` for the transports (``node``: the replying node, default ``self.node``)."""
        node = self.node if node is None else node
        if self.ok:
            return reply_header(self.request or {}, node=node, **self.fields), self.arrays
        return error_header(self.request, self.code, self.message, node=node), []

    def with_fields(self, **fields: Any) -> "Reply":
        """This reply with more header fields (e.g. a plugin adding its state to ``status``)."""
        if self.ok:
            self.fields = {**self.fields, **fields}
        return self

    def exception(self, node: str | None = None) -> PatError | None:
        """``None`` for an ok reply, else the error the coordinator raises for it (naming ``node``)."""
        if self.ok:
            return None
        node = node or self.node
        if self.code is ErrorCode.EXPIRED:
            return DeviceTimeoutError(node, f"the node dropped the request as past its deadline: {self.message}")
        return RemoteDeviceError(node, self.message, code=self.code)

    def raise_for_error(self, node: str | None = None) -> "Reply":
        """Raise :meth:`exception` for an error reply; return ``self`` when ok."""
        exc = self.exception(node)
        if exc is not None:
            raise exc
        return self

    def __repr__(self) -> str:
        if self.ok:
            return f"Reply(ok, node={self.node!r}, arrays={len(self.arrays)})"
        return f"Reply(error {self.code}, node={self.node!r}: {self.message[:80]!r})"


__all__ = ["ErrorCode", "MessageType", "Reply", "Request", "RequestError", "reply_code"]
