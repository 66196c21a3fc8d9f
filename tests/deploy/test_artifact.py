"""The .pnn container: round trip, determinism, and a clear ArtifactError for every kind of damage."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from pat_runtime.devices.spec import DeviceSpec
from pat_runtime.artifact import (ArtifactError, build_artifact, check_compatible, dumps, load_artifact, loads,
                              save_artifact)

SPEC = DeviceSpec(kind="sim:circuit", in_dim=16, param_dim=16, out_dim=16, y_range=(-1.5, 1.5))


def _art(version="1"):
    rng = np.random.default_rng(0)
    tensors = {"layers.0.weight": rng.standard_normal((16, 64)).astype(np.float32),
               "layers.1.theta": rng.uniform(-1, 1, 16).astype(np.float32),
               "counts": np.arange(5, dtype=np.int64)}
    layers = [{"type": "linear", "weight": "layers.0.weight"}, {"type": "physical", "theta": "layers.1.theta"}]
    return build_artifact(tensors, layers, SPEC, model_version=version, normalization={"x_scale": 2.0},
                          metadata={"task": "digits", "acc": np.float32(0.9)}, created="2026-01-01T00:00:00+00:00")


def _rezip(data: bytes, **replace: bytes) -> bytes:
    """Rewrite the container with some members replaced (valid zip CRCs: only our own checks can catch it)."""
    zin = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, replace.get(info.filename.replace(".", "_"), zin.read(info)))
    return out.getvalue()


def test_round_trip_is_exact_and_deterministic(tmp_path):
    art = _art()
    data = dumps(art)
    assert dumps(_art()) == data  # same model -> same bytes -> same id
    back = loads(data, spec=SPEC)
    assert back.artifact_id == art.artifact_id and len(back.artifact_id) == 64
    assert back.model_version == "1" and back.device_kind == "sim:circuit" and back.spec == SPEC
    assert back.normalization == {"x_scale": 2.0} and back.metadata["task"] == "digits"
    assert [lyr["type"] for lyr in back.layers] == ["linear", "physical"]
    for k, v in art.tensors.items():
        assert back.tensors[k].dtype == v.dtype and np.array_equal(back.tensors[k], v)
    path = tmp_path / "m.pnn"
    assert save_artifact(path, art) == art.artifact_id
    assert load_artifact(path).artifact_id == art.artifact_id
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp file


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_bytes_are_refused(damage):
    data = bytearray(dumps(_art()))
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF  # inside the payload: the zip CRC or our sha256 catches it
    elif damage == "garbage":
        data = bytearray(b"not an artifact at all" * 10)
    else:
        data = bytearray()
    with pytest.raises(ArtifactError) as ei:
        loads(bytes(data))
    assert ei.value.code in ("corrupt", "checksum_mismatch")
    assert "artifact" in str(ei.value) or "sha256" in str(ei.value)


def test_altered_payload_with_valid_zip_fails_checksum():
    data = dumps(_art())
    zf = zipfile.ZipFile(io.BytesIO(data))
    payload = bytearray(zf.read("payload.bin"))
    payload[10] ^= 0x01
    with pytest.raises(ArtifactError) as ei:
        loads(_rezip(data, payload_bin=bytes(payload)))
    assert ei.value.code == "checksum_mismatch" and "payload sha256" in str(ei.value)


def test_altered_manifest_fails_checksum_and_bad_manifest_is_named():
    data = dumps(_art())
    zf = zipfile.ZipFile(io.BytesIO(data))
    m = json.loads(zf.read("manifest.json"))
    m["device"]["spec"]["in_dim"] = 8  # tampering without updating the digest
    with pytest.raises(ArtifactError) as ei:
        loads(_rezip(data, manifest_json=json.dumps(m).encode()))
    assert ei.value.code == "checksum_mismatch"
    # a manifest rewritten consistently (digest updated) but from the future is refused by version
    import hashlib

    m = json.loads(zf.read("manifest.json"))
    m["format_version"] = 99
    mb = json.dumps(m).encode()
    with pytest.raises(ArtifactError) as ei:
        loads(_rezip(data, manifest_json=mb, manifest_sha256=hashlib.sha256(mb).hexdigest().encode()))
    assert ei.value.code == "unsupported_version" and "99" in str(ei.value)
    del m["layers"]
    m["format_version"] = 1
    mb = json.dumps(m).encode()
    with pytest.raises(ArtifactError) as ei:
        loads(_rezip(data, manifest_json=mb, manifest_sha256=hashlib.sha256(mb).hexdigest().encode()))
    assert ei.value.code == "bad_manifest" and "layers" in str(ei.value)


def test_device_mismatch_is_refused_with_both_values_named():
    data = dumps(_art())
    other_kind = DeviceSpec(kind="sim:plate", in_dim=16, param_dim=16, out_dim=16)
    with pytest.raises(ArtifactError) as ei:
        loads(data, spec=other_kind)
    assert ei.value.code == "kind_mismatch" and "sim:circuit" in str(ei.value) and "sim:plate" in str(ei.value)
    other_dims = DeviceSpec(kind="sim:circuit", in_dim=8, param_dim=16, out_dim=8)
    with pytest.raises(ArtifactError) as ei:
        check_compatible(loads(data), other_dims)
    assert ei.value.code == "spec_mismatch" and "in_dim: artifact 16 vs device 8" in str(ei.value)


def test_unreadable_path_and_size_limit(tmp_path):
    with pytest.raises(ArtifactError) as ei:
        load_artifact(tmp_path / "missing.pnn")
    assert ei.value.code == "unreadable"
    with pytest.raises(ArtifactError) as ei:
        loads(dumps(_art()), max_bytes=100)
    assert ei.value.code == "too_large"
