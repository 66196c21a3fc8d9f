"""Deployment plugin on a NodeService (no transport): deploy, infer, refuse, roll back, survive restarts."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from pat_runtime.edge.deployed import Deployment
from pat_runtime.edge.service import NodeService
from pat_runtime.artifact import loads, pnn_from_artifact
from pat_runtime.testing import sim_device
from pat_runtime.testing.deploy import pnn_artifact
from pat_runtime.wire import MessageType, make_header

torch.set_num_threads(1)
SIM = dict(kind="circuit", unit=2, seed=5, noise=0.0)


async def _node(tmp_path, name="dep"):
    dev = await sim_device(**SIM)
    svc = NodeService(dev, "node1")
    dep = Deployment(tmp_path / name)
    await dep(svc)
    return dev, svc, dep


async def _req(svc, type, arrays=(), **fields):
    return await svc.handle(make_header(type, node="node1", **fields), list(arrays))


def _u8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)


async def _local_logits(data: bytes, x: np.ndarray) -> np.ndarray:
    """The same artifact evaluated here on an identical (noiseless) device."""
    dev = await sim_device(**SIM)
    model = pnn_from_artifact(loads(data, spec=dev.spec), dev)
    with torch.no_grad():
        return (await model.aforward(torch.from_numpy(x))).numpy()


async def test_deploy_infer_matches_local_evaluation(tmp_path):
    dev, svc, dep = await _node(tmp_path)
    h, _ = await _req(svc, MessageType.INFER, [np.zeros((2, 64), np.float32)])
    assert not h["ok"] and h["error"]["code"] == "no_model"
    art, data = pnn_artifact(dev, version="1", seed=1)
    h, _ = await _req(svc, MessageType.DEPLOY, [_u8(data)], sha256=art.artifact_id)
    assert h["ok"], h
    assert h["artifact_id"] == art.artifact_id and h["model_version"] == "1" and h["previous"] is None
    x = np.random.default_rng(0).random((40, 64), dtype=np.float32)
    h, (logits, labels) = await _req(svc, MessageType.INFER, [x])
    assert h["ok"] and h["model_version"] == "1" and logits.shape == (40, 10) and labels.shape == (40,)
    np.testing.assert_array_equal(logits, await _local_logits(data, x))
    np.testing.assert_array_equal(labels, logits.argmax(1))
    # a single sample [F] works too; a wrong feature count is a clear error, not a crash
    h, (one, _) = await _req(svc, MessageType.INFER, [x[0]])
    assert h["ok"]  # batch size 1 takes another BLAS path than 40: equal up to float32 rounding
    np.testing.assert_allclose(one[0], logits[0], rtol=0, atol=1e-6)
    h, _ = await _req(svc, MessageType.INFER, [x[:, :10]])
    assert not h["ok"] and h["error"]["code"] == "bad_shape" and "[B, 64]" in h["error"]["message"]
    h, _ = await _req(svc, MessageType.INFER, [np.full((1, 64), np.nan, np.float32)])
    assert not h["ok"] and h["error"]["code"] == "bad_shape"


def _tamper_payload(data: bytes) -> bytes:
    zin = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in zin.infolist():
            b = zin.read(info)
            if info.filename == "payload.bin":
                b = b[:-4] + bytes(4)  # change the last weights; zip CRCs are recomputed (valid container)
            z.writestr(info, b)
    return out.getvalue()


async def test_bad_artifacts_are_refused_and_the_old_model_keeps_serving(tmp_path):
    dev, svc, dep = await _node(tmp_path)
    art1, data1 = pnn_artifact(dev, version="1", seed=1)
    assert (await _req(svc, MessageType.DEPLOY, [_u8(data1)]))[0]["ok"]
    x = np.random.default_rng(1).random((8, 64), dtype=np.float32)
    before = (await _req(svc, MessageType.INFER, [x]))[1][0]

    _, data2 = pnn_artifact(dev, version="2", seed=2)
    flipped = bytearray(data2)
    flipped[len(flipped) // 2] ^= 0x55
    wrong_kind_dev = await sim_device("circuit", in_dim=8, param_dim=8)
    _, small = pnn_artifact(wrong_kind_dev, version="9", n_features=64)
    cases = {
        "corrupt bytes": (bytes(flipped), {}, {"corrupt", "checksum_mismatch"}),
        "truncated": (data2[:100], {}, {"corrupt"}),
        "altered weights": (_tamper_payload(data2), {}, {"checksum_mismatch"}),
        "wrong expected sha256": (data2, {"sha256": "0" * 64}, {"checksum_mismatch"}),
        "wrong spec dims": (small, {}, {"spec_mismatch"}),
    }
    for name, (blob, fields, codes) in cases.items():
        h, _ = await _req(svc, MessageType.DEPLOY, [_u8(blob)], **fields)
        assert not h["ok"], name
        assert h["error"]["code"] in codes, (name, h["error"])
        assert "still serving version 1" in h["error"]["message"], (name, h["error"])
        h, (logits, _) = await _req(svc, MessageType.INFER, [x])
        assert h["ok"] and h["model_version"] == "1" and np.array_equal(logits, before), name
    h, _ = await _req(svc, MessageType.DEPLOY, [np.zeros((2, 2), np.float32)])
    assert not h["ok"] and h["error"]["code"] == "bad_request"
    assert dep.counters["refused"] == 5 and dep.history == [art1.artifact_id]


async def test_wrong_device_kind_is_refused(tmp_path):
    dev, svc, dep = await _node(tmp_path)
    from pat_runtime.artifact import build_artifact, dumps
    from pat_runtime.devices.spec import DeviceSpec
    from pat_runtime.signing import load_signing_key

    other = DeviceSpec(**{**dev.spec.to_dict(), "kind": "sim:plate", "extra": {}})
    art = build_artifact({"t": np.zeros(3, np.float32)}, [{"type": "physical"}], other, "7")
    h, _ = await _req(svc, MessageType.DEPLOY, [_u8(dumps(art, load_signing_key()))])  # signed: trusted key
    assert not h["ok"] and h["error"]["code"] == "kind_mismatch"
    assert "sim:plate" in h["error"]["message"] and "sim:circuit" in h["error"]["message"]
    assert "still serving no model" in h["error"]["message"]


async def test_rollback_and_restart_persistence(tmp_path):
    dev, svc, dep = await _node(tmp_path)
    h, _ = await _req(svc, MessageType.ROLLBACK)
    assert not h["ok"] and h["error"]["code"] == "no_model"
    arts = [pnn_artifact(dev, version=str(v), seed=v) for v in (1, 2, 3)]
    x = np.random.default_rng(2).random((16, 64), dtype=np.float32)
    outs = {}
    for art, data in arts:
        h, _ = await _req(svc, MessageType.DEPLOY, [_u8(data)])
        assert h["ok"] and not h["unchanged"]
        outs[art.model_version] = (await _req(svc, MessageType.INFER, [x]))[1][0]
    assert not np.array_equal(outs["2"], outs["3"])  # versions really differ
    h, _ = await _req(svc, MessageType.DEPLOY, [_u8(arts[2][1])])  # redeploying the current one is a no-op
    assert h["ok"] and h["unchanged"]

    h, _ = await _req(svc, MessageType.ROLLBACK)
    assert h["ok"] and h["model_version"] == "2" and h["previous"] == arts[0][0].artifact_id
    h, (logits, _) = await _req(svc, MessageType.INFER, [x])
    assert h["model_version"] == "2" and np.array_equal(logits, outs["2"])

    # a restarted node comes back with the same model, history and files
    state = json.loads((tmp_path / "dep" / "state.json").read_text())
    assert state["history"] == [arts[0][0].artifact_id, arts[1][0].artifact_id]
    dev2, svc2, dep2 = await _node(tmp_path)
    h, (logits, _) = await _req(svc2, MessageType.INFER, [x])
    assert h["ok"] and h["model_version"] == "2" and np.array_equal(logits, outs["2"])
    h, _ = await _req(svc2, "models")
    assert [m["model_version"] for m in h["history"]] == ["1", "2"] and h["current"]["model_version"] == "2"

    # damage the current file on disk: the restarted node refuses it and falls back to version 1
    path = tmp_path / "dep" / "artifacts" / f"{arts[1][0].artifact_id}.pnn"
    path.write_bytes(path.read_bytes()[:-10])
    dev3, svc3, dep3 = await _node(tmp_path)
    h, (logits, _) = await _req(svc3, MessageType.INFER, [x])
    assert h["ok"] and h["model_version"] == "1" and np.array_equal(logits, outs["1"])
    h, _ = await _req(svc3, MessageType.ROLLBACK)
    assert not h["ok"] and h["error"]["code"] == "no_previous"


async def test_history_is_bounded_and_rollback_to_named_version(tmp_path):
    dev, svc, dep = await _node(tmp_path)
    arts = [pnn_artifact(dev, version=str(v), seed=v) for v in range(1, 6)]
    for _, data in arts:
        assert (await _req(svc, MessageType.DEPLOY, [_u8(data)]))[0]["ok"]
    assert dep.history == [a.artifact_id for a, _ in arts[-3:]]
    assert sorted(p.stem for p in (tmp_path / "dep" / "artifacts").glob("*.pnn")) == sorted(dep.history)
    h, _ = await _req(svc, MessageType.ROLLBACK, to=arts[2][0].artifact_id)
    assert h["ok"] and h["model_version"] == "3" and dep.history == [arts[2][0].artifact_id]
    h, _ = await _req(svc, MessageType.ROLLBACK, to=arts[0][0].artifact_id)
    assert not h["ok"] and h["error"]["code"] == "unknown_version"
