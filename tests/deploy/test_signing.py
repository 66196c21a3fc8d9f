"""Signed artifacts: `pat keys`, signing at train/deploy time, trusted keys at the edge, key rotation."""
from __future__ import annotations

import asyncio
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from pat_runtime.edge.deployed import Deployment
from pat_runtime.edge.service import NodeService
from pat_runtime.artifact import ArtifactError, dumps, loads, save_artifact, sign_artifact
from pat_runtime.cli import app
from pat_runtime.signing import KeyFileError, TrustedKeys, generate_key, load_signing_key
from pat_runtime.testing import sim_device
from pat_runtime.testing.artifact_attacks import members, rezip, tamper
from pat_runtime.testing.deploy import pnn_artifact
from pat_runtime.wire import MessageType, make_header

SIM = dict(kind="circuit", unit=2, seed=5, noise=0.0)
run = CliRunner().invoke


def test_pat_keys_create_writes_a_private_key_only_its_owner_can_read(tmp_path):
    r = run(app, ["keys", "create", "--dir", str(tmp_path / "k")])
    assert r.exit_code == 0, r.output
    key_file, pub = tmp_path / "k" / "signing.key", tmp_path / "k" / "signing.pub"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert pub.read_text().startswith("ed25519:") and pub.read_text().split()[0] in r.output
    assert pub.read_text().split()[0] in (tmp_path / "k" / "trusted_keys").read_text()
    assert "PRIVATE KEY" not in r.output and "PRIVATE KEY" not in pub.read_text()
    r = run(app, ["keys", "create", "--dir", str(tmp_path / "k")])
    assert r.exit_code == 2 and "exists" in r.output  # never overwritten by accident
    r = run(app, ["keys", "show", "--key", str(key_file)])
    assert r.exit_code == 0 and r.output.split()[0] == pub.read_text().split()[0]
    key_file.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(key_file)


def test_private_keys_are_never_written_into_run_folders(tmp_path):
    run_dir = tmp_path / "runs" / "sim_plate-digits-pat-s0"
    run_dir.mkdir(parents=True)
    r = run(app, ["keys", "create", "--dir", str(run_dir)])
    assert r.exit_code == 2 and "run folder" in r.output
    other = tmp_path / "exp"
    other.mkdir()
    (other / "summary.json").write_text("{}")
    with pytest.raises(KeyFileError, match="run folder"):
        generate_key(other / "keys")
    assert not list(tmp_path.rglob("signing.key"))


def test_signatures_bind_origin_and_content(tmp_path):
    dev = asyncio.run(sim_device(**SIM))
    art, unsigned = pnn_artifact(dev, sign=False)
    mine = load_signing_key()
    _, _, theirs = generate_key(tmp_path / "other", trust=False)
    trusted = TrustedKeys([mine.public_raw])
    signed = sign_artifact(unsigned, mine)
    assert loads(signed, trusted=trusted).signer == mine.public_raw
    assert loads(signed).artifact_id == loads(unsigned).artifact_id == art.artifact_id  # id = content
    for blob, code in [(unsigned, "unsigned"), (sign_artifact(unsigned, theirs), "untrusted_key"),
                       # content changed, checksums recomputed, old signature kept: forged
                       (rezip({**members(tamper(unsigned, lambda m: m["metadata"].update(evil=1))),
                               "signature.json": members(signed)["signature.json"]}), "bad_signature"),
                       (rezip({**members(unsigned), "signature.json": b'{"alg": "rsa"}'}), "bad_signature")]:
        with pytest.raises(ArtifactError) as ei:
            loads(blob, trusted=trusted)
        assert ei.value.code == code, str(ei.value)
    with pytest.raises(ArtifactError) as ei:
        loads(unsigned, trusted=TrustedKeys([], "edge.keys"))
    assert ei.value.code == "unsigned" and "edge.keys" in ei.value.message


async def test_edge_trusts_listed_keys_and_rotation_needs_no_restart(tmp_path):
    dev = await sim_device(**SIM)
    svc = NodeService(dev, "node1")
    trust_file = tmp_path / "edge_trusted_keys"
    old = load_signing_key()
    _, _, new = generate_key(tmp_path / "newkey", trust=False)
    trust_file.write_text(old.public_text + " old\n")
    dep = Deployment(tmp_path / "dep", trusted_keys=trust_file)
    await dep(svc)

    async def deploy(blob):
        return (await svc.handle(make_header(MessageType.DEPLOY, node="node1"), [np.frombuffer(blob, np.uint8)]))[0]

    _, v1 = pnn_artifact(dev, version="1", seed=1, sign=old)
    _, v2 = pnn_artifact(dev, version="2", seed=2, sign=new)
    assert (await deploy(v1))["ok"]
    h = await deploy(v2)
    assert not h["ok"] and h["error"]["code"] == "untrusted_key" and "still serving version 1" in h["error"]["message"]
    # rotation: trust the new key next to the old one (the file is re-read), re-sign, then drop the old key
    trust_file.write_text(old.public_text + " old\n" + new.public_text + " new\n")
    assert (await deploy(v2))["ok"]
    trust_file.write_text(new.public_text + " new\n")
    h = await deploy(sign_artifact(v1, new))  # v1 re-signed with the new key is accepted again
    assert h["ok"] and h["model_version"] == "1"
    # a restart re-verifies the stored history against the current list: v1 was stored re-signed, v2 new-signed
    dep2 = Deployment(tmp_path / "dep", trusted_keys=trust_file)
    await dep2(NodeService(dev, "node1"))
    assert dep2.current.artifact.model_version == "1" and len(dep2.history) == 2
    _, v3 = pnn_artifact(dev, version="3", seed=3, sign=old)
    h = await deploy(v3)  # the old key is no longer trusted
    assert not h["ok"] and h["error"]["code"] == "untrusted_key" and "still serving version 1" in h["error"]["message"]


def test_pat_keys_sign_and_trust(tmp_path):
    dev = asyncio.run(sim_device(**SIM))
    art, _ = pnn_artifact(dev, sign=False)
    model = tmp_path / "m.pnn"
    save_artifact(model, art)
    assert loads(model.read_bytes()).signer is None
    r = run(app, ["keys", "sign", str(model)])
    assert r.exit_code == 0, r.output
    key = load_signing_key()
    assert loads(model.read_bytes()).signer == key.public_raw
    trust = tmp_path / "edge.keys"
    r = run(app, ["keys", "trust", key.public_text, "--file", str(trust)])
    assert r.exit_code == 0 and "trusted" in r.output
    r = run(app, ["keys", "trust", str(tmp_path / "nope.pub"), "--file", str(trust)])
    assert r.exit_code == 2
    assert loads(model.read_bytes(), trusted=TrustedKeys.from_file(trust)).artifact_id == art.artifact_id
    r = run(app, ["deploy", str(model), "--inspect"])
    assert r.exit_code == 0 and key.key_id in r.output
    assert dumps(art) != model.read_bytes()  # the signature travels inside the artifact
