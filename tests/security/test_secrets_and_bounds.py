"""Nothing the project writes holds a secret; helpers that bound state (backoff, metadata, keys, ACL)."""
from __future__ import annotations

import json
import random
import zipfile

import pytest

from pat_runtime.redact import has_secret, redact_uri, strip_credentials
from pat_runtime.testing import sim_device
from pat_runtime.transport.backoff import Backoff
from pat_runtime.transport.meta import FIELDS, node_meta
from pat_runtime.transport.mqtt.acl import AclSpec, broker_conf, write_broker_config
from pat_runtime.transport.mqtt.common import MqttUrl
from pat_runtime.transport.mqtt.credentials import resolve_credentials
from pat_runtime.transport.zmq.identity import IdentityError, NodeIdentities, load_keys

SECRET = "S3cretPW-xyz"
URI = f"mqtt://coordinator:{SECRET}@127.0.0.1:1883/node-1?prefix=lab&token=tok-{SECRET}"


def test_redaction_helpers():
    assert redact_uri(URI) == "mqtt://coordinator:***@127.0.0.1:1883/node-1?prefix=lab&token=***"
    assert strip_credentials(URI) == "mqtt://127.0.0.1:1883/node-1?prefix=lab"
    assert has_secret(URI) and not has_secret("sim:plate?unit=2") and not has_secret("mqtt://u@h:1/n")
    assert SECRET not in repr(MqttUrl.parse(URI))


async def test_a_training_run_records_no_secret_from_the_device_uri(tmp_path, monkeypatch):
    """summary.json, model.json, the .pnn manifest and the plot title of a run whose device URI has a password."""
    import pat_runtime.plots as plots
    from pat_runtime.pat import build_pnn
    from pat_runtime.trainers.common import EpochMetrics
    from pat_runtime.trainers.run import ExperimentConfig, RunResult, write_outputs
    from pat_runtime.twins import make_twin

    titles = []
    real = plots.plot_curves
    monkeypatch.setattr(plots, "plot_curves", lambda h, p, title="": (titles.append(title), real(h, p, title))[1])
    cfg = ExperimentConfig(device=URI, task="digits", method="pat", twin="nominal", epochs=1)
    dev = await sim_device("plate")
    model = build_pnn(64, 10, make_twin("nominal", dev.spec), spec=dev.spec, layers=1)
    hist = [EpochMetrics(1, 1.0, 0.5, 0.5, 1.0, None, 100.0, 10, 100, 1.0)]
    out = tmp_path / "run"
    out.mkdir()
    summary = {"command": cfg.command(), "config": cfg.to_dict(), "test_acc": 0.5, "twin": None}
    write_outputs(RunResult(cfg, hist, summary, model, out=out))
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"summary.json", "model.pnn", "curves.png"} <= {p.name for p in files}
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    with zipfile.ZipFile(out / "model.pnn") as z:
        manifest = json.loads(z.read("manifest.json"))
    assert SECRET not in json.dumps(manifest) and "***" in manifest["metadata"]["device"]
    assert titles and SECRET not in titles[0] and "coordinator:***@" in titles[0]
    recorded = json.loads((out / "summary.json").read_text())
    assert "***" in recorded["config"]["device"] and "***" in recorded["command"]


def test_credentials_come_from_file_then_environment_and_url_passwords_warn(tmp_path, caplog):
    f = tmp_path / "c.toml"
    f.write_text('username = "node-1"\npassword = "from-file"\nca = "ca.crt"\n')
    f.chmod(0o600)
    c = resolve_credentials(None, None, {"credentials": str(f)}, env={})
    assert (c.username, c.password, c.source, c.ca) == ("node-1", "from-file", "file", str(tmp_path / "ca.crt"))
    assert "from-file" not in repr(c)
    c = resolve_credentials("u", None, {}, env={"PAT_MQTT_PASSWORD": "from-env"})
    assert (c.username, c.password, c.source) == ("u", "from-env", "env")
    with caplog.at_level("WARNING", "pat_runtime.transport.mqtt"):
        c = resolve_credentials("u", "in-url", {}, where="broker-x", env={})
    assert c.source == "url" and "carries a password" in caplog.text and "in-url" not in caplog.text


def test_backoff_grows_with_jitter_and_resets():
    b = Backoff(0.1, 1.0, rng=random.Random(0))
    delays = [b.next() for _ in range(8)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(0 < d <= m for d, m in zip(delays, bases))   # full jitter: uniform in (0, base]
    assert len({round(d, 6) for d in delays[4:]}) == 4  # jittered, not in lock-step
    b.reset()
    assert 0 < b.next() <= 0.1
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_node_meta_keeps_known_typed_bounded_fields_only():
    meta, dropped = node_meta({"v": 1, "type": "heartbeat", "id": "x", "node": "n", "seq": 3, "inflight": -1,
                               "heartbeat": float("nan"), "handlers": ["a"] * 65, "sid": "s" * 65, "pid": True,
                               "evil": "x", **{f"k{i}": i for i in range(100)}})
    assert meta == {"seq": 3} and dropped == 106
    assert set(node_meta({k: None for k in FIELDS})[0]) == set()


def test_identity_binding_rules(tmp_path):
    keys = {b"A" * 40: "node-1", b"B" * 40: "node-2"}
    ids = NodeIdentities(keys)
    ids.claim(b"r1", "node-1", "A" * 40, alive=lambda n: True)
    with pytest.raises(IdentityError, match="registered for 'node-2'"):
        ids.claim(b"r2", "node-1", "B" * 40, alive=lambda n: False)
    with pytest.raises(IdentityError):
        ids.claim(b"r3", "node-1", None, alive=lambda n: False)
    assert ids.route("node-1") == b"r1" and ids.node_of(b"r2") is None
    ids.claim(b"r4", "node-1", "A" * 40, alive=lambda n: True)  # the key holder reconnected: takes over
    assert ids.route("node-1") == b"r4" and ids.node_of(b"r1") is None
    open_ids = NodeIdentities(max_routes=3)
    for i in range(10):
        open_ids.claim(f"r{i}".encode(), f"n{i}", None, alive=lambda n: True)
    assert len(open_ids) == 3
    (tmp_path / "keys.txt").write_text(f"# comment\nnode-1 {'#' * 40}\nnode-2 {'C' * 40}\n")
    assert load_keys(tmp_path / "keys.txt") == {b"#" * 40: "node-1", b"C" * 40: "node-2"}
    (tmp_path / "dup.txt").write_text(f"node-1 {'C' * 40}\nnode-2 {'C' * 40}\n")
    with pytest.raises(ValueError, match="registered for both"):
        load_keys(tmp_path / "dup.txt")


def test_generated_broker_config_has_limits_acl_and_no_anonymous(tmp_path):
    spec = AclSpec(["node-1"], streams=["lab/samples"], producers=["sensor"])
    conf = broker_conf(spec, tmp_path, port=1883)
    for line in ("allow_anonymous false", "set_tcp_nodelay true", "max_queued_messages 1000", "max_packet_size",
                 "max_queued_bytes", "listener 1883 127.0.0.1"):
        assert line in conf
    acl = spec.acl()
    assert "user node-1\ntopic read pat/node-1/req" in acl and "topic write pat/+/req" in acl
    assert "user sensor\ntopic write lab/samples" in acl and "topic read lab/samples" in acl
    files = write_broker_config(tmp_path / "b", spec, passwords={"node-1": "pw1"}, use_passwd_tool=False)
    assert (tmp_path / "b" / "passwd").read_text().startswith("coordinator:$7$101$")
    assert "pw1" not in (tmp_path / "b" / "passwd").read_text()
    assert files["node-1"].stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="named twice"):
        AclSpec(["coordinator"])


def test_edge_status_lines_never_print_a_password_from_the_url():
    from pat_runtime.edge.status import EdgeStatus

    lines: list[str] = []
    st = EdgeStatus("node-1", "mqtt://user:s3cret@127.0.0.1:1883", echo=lines.append)
    st.echo(f"connecting to {st.connect}")
    assert "s3cret" not in st.connect and "user" in st.connect
    assert not any("s3cret" in line for line in lines)
