"""The one URI parser (pat_runtime.devices.uri): parts, bounds, repeated keys, errors without secrets."""
from __future__ import annotations

import pytest

from pat_runtime.devices import parse_options, parse_uri
from pat_runtime.devices.uri import MAX_QUERY_PARAMS, MAX_URI_CHARS, parse_query
from pat_runtime.transport.mqtt.common import MqttUrl, split_device_url
from pat_runtime.transport.remote import connect_uri

SECRET = "hunter2-S3cret"


def test_parts():
    u = parse_uri(f"MQTTS://coord:{SECRET}@[::1]:8883/node%2D1/?prefix=lab&credentials=/etc/c.toml")
    assert (u.scheme, u.host, u.port, u.path) == ("mqtts", "::1", 8883, "node-1")
    assert (u.username, u.password, u.hostport) == ("coord", SECRET, "[::1]:8883")
    assert u.options == {"prefix": "lab", "credentials": "/etc/c.toml"} and u.option("x", "d") == "d"
    assert SECRET not in repr(u) and SECRET not in u.redacted
    assert u.geturl(path="", query=[("prefix", "x")]) == f"mqtts://coord:{SECRET}@[::1]:8883?prefix=x"
    assert parse_uri("zmq://127.0.0.1:5555/n1").port == 5555 and parse_uri("sim:plate").path == "plate"


@pytest.mark.parametrize("uri, error", [
    (f"mqtt://u:{SECRET}@h:99999/n", "bad port in URI"),
    (f"mqtt://u:{SECRET}@h:1883/n?prefix=a&prefix=b", "'prefix' is given more than once"),
    (f"mqtt://u:{SECRET}@h:1883/n?" + "&".join(f"k{i}=1" for i in range(MAX_QUERY_PARAMS + 1)),
     f"more than {MAX_QUERY_PARAMS} options"),
    (f"mqtt://u:{SECRET}@h:1883/" + "n" * MAX_URI_CHARS, f"longer than {MAX_URI_CHARS}"),
    (f"http://u:{SECRET}@h:1/n", "scheme 'http' is not one of zmq, mqtt"),
])
def test_errors_name_the_uri_without_its_secret(uri, error):
    with pytest.raises(ValueError, match=error) as ei:
        parse_uri(uri, schemes=("zmq", "mqtt"))
    assert SECRET not in str(ei.value) and "u:***@h" in str(ei.value)


def test_every_user_of_the_parser_refuses_and_redacts_the_same_way():
    twice = f"mqtt://u:{SECRET}@127.0.0.1:1883/node-1?prefix=a&prefix=b"
    for parse in (MqttUrl.parse, split_device_url, connect_uri):
        with pytest.raises(ValueError, match="given more than once") as ei:
            parse(twice)
        assert SECRET not in str(ei.value)
    with pytest.raises(ValueError, match="not an MQTT URL") as ei:
        MqttUrl.parse(f"http://u:{SECRET}@h:1")
    assert SECRET not in str(ei.value)
    with pytest.raises(ValueError, match="'unit' is given more than once"):
        parse_options("unit=1&unit=2", {"unit": 0}, where="sim:plate")
    assert parse_query("a=1&b=", keep_blank=True) == (("a", "1"), ("b", ""))
