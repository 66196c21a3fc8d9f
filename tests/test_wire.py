import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pat_runtime import wire


def test_frames_roundtrip_zero_copy():
    x = np.random.rand(256, 784).astype(np.float32)
    theta = np.arange(5, dtype=np.float64)
    frames = wire.encode(wire.make_header("apply", node="n1"), [x, theta])
    h, (x2, t2) = wire.decode(frames)
    assert h["type"] == "apply" and h["node"] == "n1" and h["v"] == wire.VERSION
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(t2, theta)
    assert np.shares_memory(np.frombuffer(frames[1], np.float32), x)  # encode does not copy


def test_payload_roundtrip():
    x = np.random.rand(3, 7).astype(np.float32)
    h, (x2,) = wire.unpack(wire.pack(wire.make_header("apply"), [x]))
    np.testing.assert_array_equal(x2, x)


@pytest.mark.parametrize("frames,code", [
    ([], "empty"),
    ([b"\xc1garbage"], "bad_header"),
    ([b"\x01"], "bad_header"),
])
def test_malformed_frames_raise_wire_error(frames, code):
    with pytest.raises(wire.WireError) as e:
        wire.decode(frames)
    assert e.value.code == code


def test_size_mismatch_and_frame_count():
    frames = wire.encode(wire.make_header("apply"), [np.zeros((4, 4), np.float32)])
    with pytest.raises(wire.WireError, match="size_mismatch"):
        wire.decode([frames[0], b"\0" * 10])
    with pytest.raises(wire.WireError, match="frame_count"):
        wire.decode([frames[0]])


def test_limits_enforced():
    lim = wire.Limits(max_array_bytes=1024)
    with pytest.raises(wire.WireError, match="array_too_large"):
        wire.encode(wire.make_header("apply"), [np.zeros(1000, np.float32)], lim)
    import msgpack
    hb = msgpack.packb({"v": 1, "type": "apply", "id": "x", "arrays": [{"dtype": "float32", "shape": [2**20, 2**10]}]})
    with pytest.raises(wire.WireError, match="array_too_large"):
        wire.decode([hb, b""], lim)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_unpack_never_crashes_unexpectedly(data):
    """Random bytes either decode to a header dict and arrays, or fail with a coded WireError."""
    try:
        header, arrays = wire.unpack(data)
    except wire.WireError as e:
        assert e.code and str(e).startswith(e.code)
    else:
        assert isinstance(header, dict) and all(isinstance(a, np.ndarray) for a in arrays)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_fuzz_decode_never_crashes_unexpectedly(frames):
    """Random frames either decode to a header dict and arrays, or fail with a coded WireError."""
    try:
        header, arrays = wire.decode(frames)
    except wire.WireError as e:
        assert e.code and str(e).startswith(e.code)
    else:
        assert isinstance(header, dict) and all(isinstance(a, np.ndarray) for a in arrays)
