"""The protocol version must be exactly the int 1: 1.0 and True compare equal to 1 but are refused."""
from __future__ import annotations

import msgpack
import pytest

from pat_runtime.wire import VERSION, WireError, decode, decode_header, pack, unpack


@pytest.mark.parametrize("v", [1.0, True, "1", None, 2, [1]])
def test_versions_that_only_look_like_1_are_refused(v):
    hb = msgpack.packb({"v": v, "type": "ping", "id": "a"})
    for parse in (lambda: decode_header(hb), lambda: decode([hb])):
        with pytest.raises(WireError) as ei:
            parse()
        assert ei.value.code == "bad_version"


def test_version_1_is_accepted_and_pack_writes_it():
    assert decode_header(msgpack.packb({"v": VERSION, "type": "ping"}))["type"] == "ping"
    h, _ = unpack(pack({"type": "ping", "v": 1.0}))  # the sender's version field is always the int
    assert type(h["v"]) is int and h["v"] == VERSION
