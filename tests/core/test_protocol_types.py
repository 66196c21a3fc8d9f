"""The typed protocol: one ErrorCode enum (no free-string codes), Request/Reply round trips over the unchanged
wire format, the error tree (new branches, old bases kept), and typed errors end to end over inproc."""
from __future__ import annotations

import ast
import asyncio
import pickle
from pathlib import Path

import numpy as np
import pytest

import pat_runtime
from pat_runtime import wire
from pat_runtime.artifact_errors import ArtifactError
from pat_runtime.calibration import BudgetExceeded
from pat_runtime.config import ConfigError
from pat_runtime.deployer import DeployError
from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.errors import (ArtifactFailure, DeviceConnectionError, DeviceError, DeviceTimeoutError,
                                        OutOfRangeError, PatError, ProtocolError, RemoteDeviceError, ShapeError,
                                        TransportError)
from pat_runtime.devices.visa import InstrumentError
from pat_runtime.edge.service import NodeService
from pat_runtime.edge.service import RequestError as ServiceRequestError
from pat_runtime.fleet.scheduler import FleetError
from pat_runtime.fleet.training import LedgerError
from pat_runtime.protocol import Reply, Request, RequestError, reply_code
from pat_runtime.signing import KeyFileError
from pat_runtime.testing import sim_device
from pat_runtime.transport.inproc import InprocCoordinator, InprocEdgeTransport
from pat_runtime.transport.mqtt.common import MqttAuthError, PayloadTooLargeError
from pat_runtime.transport.mqtt.credentials import CredentialsError
from pat_runtime.transport.zmq.identity import IdentityError
from pat_runtime.wire import EncodeError, WireError

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
#: calls whose first string argument (or ``code=``) is an error code; DeployError/error_header: the second
CODE_ARG = {"WireError": 0, "RequestError": 0, "ArtifactError": 0, "IdentityError": 0, "_err": 0,
            "RemoteDeviceError": 2, "EncodeError": 1, "DeployError": 1, "error_header": 1}


def _sources():
    for folder in ("runtime", "devices", "edge", "sims"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_free_string_error_code_in_the_source():
    """Every code passed to an error or an error reply is written as an ErrorCode member."""
    bad, members = [], set(ErrorCode.__members__)
    for path in _sources():
        text = path.read_text()
        if "ErrorCode" not in text and not any(f"{n}(" in text for n in CODE_ARG):
            continue
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ErrorCode" \
                    and node.attr.isupper() and node.attr not in members:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: ErrorCode.{node.attr} is no member")
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in CODE_ARG:
                continue
            at = CODE_ARG[name]
            args = list(node.args[at:at + 1]) + [k.value for k in node.keywords if k.arg == "code"]
            for a in args:
                if isinstance(a, ast.Constant) and isinstance(a.value, str):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}({a.value!r}, ...)")
    assert not bad, "free-string error codes (use ErrorCode.X):\n" + "\n".join(bad)


def test_error_codes_are_the_wire_strings_and_documented():
    assert len(ErrorCode) == len({c.value for c in ErrorCode}) >= 40
    for c in ErrorCode:
        assert c == c.value == c.name.lower() and f"{c}" == str(c) == c.value
        assert c.__doc__ and c.__doc__ != ErrorCode.__doc__, f"{c.name} has no docstring"
    assert ErrorCode("expired") is ErrorCode.EXPIRED and ErrorCode.lookup("no such code") is None
    assert ErrorCode.lookup(["unhashable"]) is None


@pytest.mark.parametrize("make", [
    lambda: wire.error_header({"id": "a", "type": "apply"}, "no_such_code", "x"),
    lambda: WireError("no_such_code", "x"),
    lambda: RequestError("no_such_code", "x"),
    lambda: ArtifactError("no_such_code", "x"),
    lambda: RemoteDeviceError("n1", "x", code="no_such_code"),
    lambda: Request("apply", id="a").error_reply("no_such_code", "x"),
])
def test_a_code_outside_the_enum_cannot_be_made(make):
    with pytest.raises(ValueError, match="no_such_code"):
        make()


def _through_the_wire(header, arrays, packed):
    if packed:
        return wire.unpack(wire.pack(header, arrays))
    return wire.decode([bytes(f) for f in wire.encode(header, arrays)])


@pytest.mark.parametrize("packed", [False, True], ids=["frames", "payload"])
def test_reply_and_error_reply_round_trip_over_the_wire(packed):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    req_h, req_a = _through_the_wire(*Request("infer", [x], id="r1", node="n1", deadline=12.5).to_wire(), packed)
    req = Request.from_wire(req_h, req_a)
    assert (req.type, req.id, req.node, req.get("deadline"), req.fields) == ("infer", "r1", "n1", 12.5,
                                                                              {"deadline": 12.5})
    np.testing.assert_array_equal(req.arrays[0], x)

    ok = req.reply([x * 2], model_version="3")
    h, arrays = ok.to_wire("n1")
    assert h == wire.reply_header(req_h, node="n1", model_version="3")       # the wire format is unchanged
    got = Reply.from_wire(*_through_the_wire(h, arrays, packed))
    assert got.ok and got.code is None and got.node == "n1" and got.fields["model_version"] == "3"
    np.testing.assert_array_equal(got.arrays[0], x * 2)
    assert got.raise_for_error() is got and got.exception() is None

    err = req.error_reply(ErrorCode.NO_MODEL, "nothing is deployed")
    h, arrays = err.to_wire("n1")
    assert h == wire.error_header(req_h, "no_model", "nothing is deployed", node="n1") and arrays == []
    got = Reply.from_wire(*_through_the_wire(h, arrays, packed))
    assert not got.ok and got.code is ErrorCode.NO_MODEL and got.message == "nothing is deployed"
    with pytest.raises(RemoteDeviceError) as ei:
        got.raise_for_error()
    assert ei.value.code is ErrorCode.NO_MODEL and ei.value.device == "n1" and str(ei.value).startswith("[n1] no_model")


def test_reply_mapping_expired_and_unknown_codes():
    expired = Reply.from_wire(wire.error_header({"id": "a"}, ErrorCode.EXPIRED, "late", node="n2"), [])
    assert isinstance(expired.exception(), DeviceTimeoutError) and expired.exception().device == "n2"
    # a code this version does not know (a newer or a hostile peer): REMOTE, the received code kept in the message
    odd = Reply.from_wire({"v": 1, "type": "reply", "id": "a", "node": "n3", "ok": False,
                           "error": {"code": "brand_new", "message": "why"}}, [])
    assert odd.code is ErrorCode.REMOTE and "brand_new" in odd.message
    no_code = Reply.from_wire({"ok": False, "node": "n3"}, [])
    assert no_code.code is ErrorCode.REMOTE and str(no_code.exception()).startswith("[n3] remote")


# ----- the error tree ---------------------------------------------------------------------------------------
TREE = [
    # (error, branch, bases it had before the tree and must keep)
    (OutOfRangeError("dev", "x"), DeviceError, (ValueError, RuntimeError)),
    (ShapeError("dev", "x"), DeviceError, (ValueError,)),
    (InstrumentError("awg", "x", code=-113), DeviceError, (RuntimeError,)),
    (BudgetExceeded("unit3", "x"), DeviceError, (RuntimeError,)),
    (DeviceTimeoutError("n1", "x"), TransportError, (DeviceError, TimeoutError)),
    (DeviceConnectionError("n1", "x"), TransportError, (DeviceError, ConnectionError)),
    (MqttAuthError("n1", "x"), TransportError, (DeviceConnectionError, ConnectionError)),
    (PayloadTooLargeError("n1", "x"), TransportError, (DeviceError, ValueError)),
    (IdentityError(ErrorCode.WRONG_KEY, "node id 'n1' claimed", "n1"), TransportError, (PermissionError,)),
    (CredentialsError("x"), TransportError, (ValueError,)),
    (WireError(ErrorCode.BAD_HEADER, "x"), ProtocolError, (ValueError,)),
    (EncodeError("n1", ErrorCode.BAD_DTYPE, "x"), ProtocolError, (WireError, DeviceError, ValueError)),
    (RemoteDeviceError("n1", "x", ErrorCode.OUT_OF_RANGE), ProtocolError, (DeviceError,)),
    (RequestError(ErrorCode.BAD_REQUEST, "x"), ProtocolError, (Exception,)),
    (ArtifactError(ErrorCode.BAD_MANIFEST, "x"), ArtifactFailure, (ValueError,)),
    (KeyFileError("x"), ArtifactFailure, (ValueError,)),
    (DeployError("n1", ErrorCode.SPEC_MISMATCH, "x"), ArtifactFailure, (RuntimeError,)),
    (FleetError("x"), PatError, (RuntimeError,)),
    (LedgerError("x"), PatError, (RuntimeError,)),
    (ConfigError("x"), PatError, (ValueError,)),
]
BRANCHES = (DeviceError, TransportError, ProtocolError, ArtifactFailure)


@pytest.mark.parametrize("err,branch,kept", TREE, ids=[type(t[0]).__name__ for t in TREE])
def test_error_tree(err, branch, kept):
    assert isinstance(err, PatError) and isinstance(err, branch) and all(isinstance(err, k) for k in kept)
    if branch is not DeviceError:   # DeviceError is also kept as a base of some transport / protocol errors
        assert [b for b in BRANCHES[1:] if isinstance(err, b)] in ([branch], [])
    assert not isinstance(err, AssertionError)           # python -O must not lose any of them
    back = pickle.loads(pickle.dumps(err))               # they cross process boundaries (fleets, Ray)
    assert type(back) is type(err) and str(back) == str(err)


def test_errors_name_the_node_or_device():
    assert DeviceTimeoutError("n1", "x").where == "n1" and str(RemoteDeviceError("n1", "m")).startswith("[n1]")
    e = EncodeError("n7", ErrorCode.TOO_MANY_ARRAYS, "17 arrays > 16")
    assert e.where == e.device == e.node == "n7" and str(e).startswith("[n7] too_many_arrays")
    assert DeployError("n2", "spec_mismatch", "m").where == "n2"
    assert IdentityError(ErrorCode.ID_IN_USE, "node id 'n5' is in use", "n5").where == "n5"


def test_public_api_and_old_import_paths():
    assert ServiceRequestError is RequestError and wire.ErrorCode is ErrorCode
    for name in ("ErrorCode", "Request", "Reply", "PatError", "DeviceError", "TransportError", "ProtocolError",
                 "ArtifactFailure"):
        assert name in pat_runtime.__all__ and getattr(pat_runtime, name) is not None


def test_reply_code_of_handler_errors():
    assert reply_code(RequestError(ErrorCode.NO_PREVIOUS, "x")) is ErrorCode.NO_PREVIOUS
    assert reply_code(ArtifactError(ErrorCode.UNSIGNED, "x")) is ErrorCode.UNSIGNED
    assert reply_code(OutOfRangeError("d", "x")) is ErrorCode.OUT_OF_RANGE
    assert reply_code(ShapeError("d", "x")) is ErrorCode.BAD_SHAPE
    assert reply_code(InstrumentError("d", "x", code=-113)) is ErrorCode.DEVICE_ERROR   # its int code stays local
    assert reply_code(KeyError("bug")) is ErrorCode.INTERNAL


# ----- end to end over the in-process transport ----------------------------------------------------------------
async def test_typed_handlers_and_errors_reach_the_coordinator():
    async with InprocCoordinator("inproc://typed-protocol", timeout=2.0, retries=0) as coord:
        dev = await sim_device("circuit", in_dim=4, param_dim=4, substeps=1)
        svc = NodeService(dev, "n1")

        async def h_scale(req: Request) -> Reply:              # typed handler
            if not req.arrays:
                return req.error_reply(ErrorCode.BAD_REQUEST, "scale needs [x]")
            if req.get("k") == 0:
                raise RequestError(ErrorCode.NOT_CALIBRATABLE, "k = 0 cannot be calibrated")
            return req.reply([req.arrays[0] * req.get("k")], scaled=True)

        async def h_old(header, arrays):                        # the older (header, arrays) form still works
            return {"seen": header["type"]}, list(arrays)

        svc.register("scale", h_scale)
        svc.register("old", h_old)
        stop = asyncio.Event()
        task = asyncio.create_task(InprocEdgeTransport(coord, "n1", heartbeat=0.05).serve(svc, stop))
        try:
            await coord.wait_for_node("n1", timeout=5)
            x = np.ones((2, 4), np.float32)
            h, (y,) = await coord.request("n1", "scale", [x], k=3)
            assert h["ok"] and h["scaled"] and np.array_equal(y, 3 * x)
            h, (y,) = await coord.request("n1", "old", [x])
            assert h["seen"] == "old" and np.array_equal(y, x)
            for arrays, fields, code in (([], {}, ErrorCode.BAD_REQUEST), ([x], {"k": 0}, ErrorCode.NOT_CALIBRATABLE),
                                         ([], {}, None)):
                kind = "scale" if code else "nope"
                with pytest.raises(RemoteDeviceError) as ei:
                    await coord.request("n1", kind, arrays, **fields)
                assert ei.value.code is (code or ErrorCode.UNKNOWN_TYPE) and ei.value.device == "n1"
            with pytest.raises(RemoteDeviceError) as ei:     # a device error from the built-in apply handler
                await coord.request("n1", "apply", [np.full((1, 4), 9, np.float32), np.zeros(4, np.float32)])
            assert ei.value.code is ErrorCode.OUT_OF_RANGE and "[n1]" in str(ei.value)
            # a request that cannot be encoded here: a local protocol error naming the node, nothing sent
            sent = coord.stats.requests
            with pytest.raises(EncodeError) as ei:
                await coord.request("n1", "scale", [np.zeros(2, np.complex64)], k=1)
            assert not isinstance(ei.value, RemoteDeviceError) and isinstance(ei.value, (ProtocolError, DeviceError))
            assert ei.value.code is ErrorCode.BAD_DTYPE and ei.value.where == "n1" and "[n1]" in str(ei.value)
            assert coord.stats.requests == sent
            assert svc.counters["errors"] == 4
        finally:
            stop.set()
            await task
