"""Hostile ``.pnn`` artifacts for tests and ``bench/artifact_attacks.py``: each one defect, checksums recomputed
(anyone can recompute a checksum), optionally signed by a given key (the worst case: a trusted signer's
artifact that is still malformed). The zip container is rebuilt by hand, so none of these go through the
project's own writer or its checks.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import zipfile
from typing import Any, Callable

from pat_runtime.signing import SigningKey

_TIME = (2020, 1, 1, 0, 0, 0)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i.filename) for i in zf.infolist()}


def rezip(parts: dict[str, bytes], compress: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, blob in parts.items():
            info = zipfile.ZipInfo(name, date_time=_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            zf.writestr(info, blob)
    return out.getvalue()


def signature_member(manifest_bytes: bytes, key: SigningKey) -> bytes:
    aid = hashlib.sha256(manifest_bytes).hexdigest()
    return json.dumps({"alg": "ed25519", "public_key": key.public_text,
                       "signature": base64.b64encode(key.sign(aid)).decode()}).encode()


def assemble(manifest_bytes: bytes, payload: bytes, key: SigningKey | None = None, compress: bool = False,
             extra: dict[str, bytes] | None = None) -> bytes:
    """A container around raw manifest/payload bytes with correct checksums (and a signature with ``key``)."""
    parts = {"manifest.json": manifest_bytes, "payload.bin": payload,
             "manifest.sha256": hashlib.sha256(manifest_bytes).hexdigest().encode()}
    if key is not None:
        parts["signature.json"] = signature_member(manifest_bytes, key)
    parts.update(extra or {})
    return rezip(parts, compress)


def tamper(data: bytes, edit: Callable[[dict[str, Any]], None] | None = None, payload: bytes | None = None,
           key: SigningKey | None = None, text: Callable[[str], str] | None = None, **kw: Any) -> bytes:
    """Edit the manifest of a valid artifact (and/or replace the payload), recompute every checksum."""
    m = members(data)
    manifest = json.loads(m["manifest.json"])
    pb = m["payload.bin"] if payload is None else payload
    if edit is not None:
        manifest = copy.deepcopy(manifest)
        edit(manifest)
    manifest["payload"]["sha256"] = hashlib.sha256(pb).hexdigest()
    manifest["payload"]["nbytes"] = len(pb)
    mtext = json.dumps(manifest, sort_keys=True)
    if text is not None:
        mtext = text(mtext)
    return assemble(mtext.encode(), pb, key, **kw)


def _set_config(**cfg: Any) -> Callable[[dict[str, Any]], None]:
    def edit(m: dict[str, Any]) -> None:
        m["architecture"]["config"].update(cfg)
    return edit


def _first_theta(m: dict[str, Any]) -> str:
    return next(layer["theta"] for layer in m["layers"] if layer.get("type") == "physical")


def _write_theta(data: bytes, value: float) -> bytes:
    import numpy as np

    m = members(data)
    manifest = json.loads(m["manifest.json"])
    meta = manifest["payload"]["tensors"][_first_theta(manifest)]
    pb = bytearray(m["payload.bin"])
    off = meta["offset"]
    pb[off: off + 4] = np.float32(value).tobytes()
    return bytes(pb)


def attacks(valid: bytes, key: SigningKey | None = None, bomb_bytes: int = 250 * 2**20) -> dict[str, tuple[bytes, str]]:
    """name -> (artifact bytes, the ArtifactError code it must be refused with), built from ``valid``."""
    depth = 100_000

    def huge_shape(m):
        name = next(iter(m["payload"]["tensors"]))
        m["payload"]["tensors"][name]["shape"] = [2 ** 64]

    def deep(s: str) -> str:
        return s.replace('"metadata": {', '"metadata": {"deep": ' + "[" * depth + "]" * depth + ", ", 1)

    def bomb() -> bytes:
        zeros = bytes(bomb_bytes)
        manifest = json.loads(members(valid)["manifest.json"])
        manifest["payload"]["tensors"]["stages.999.pad"] = {"dtype": "uint8", "shape": [bomb_bytes],
                                                            "offset": 0, "nbytes": bomb_bytes}
        manifest["payload"].update(sha256=hashlib.sha256(zeros).hexdigest(), nbytes=bomb_bytes)
        mb = json.dumps(manifest, sort_keys=True).encode()
        return assemble(mb, zeros, key, compress=True)

    def big_manifest(s: str) -> str:
        return s.replace('"metadata": {', '"metadata": {"blob": "' + "x" * (2 * 2**20) + '", ', 1)

    out = {
        "shape [2**64]": (tamper(valid, huge_shape, key=key), "bad_manifest"),
        f"manifest nested {depth} deep": (tamper(valid, text=deep, key=key), "bad_manifest"),
        "member '../evil.py'": (tamper(valid, key=key, extra={"../evil.py": b"import os"}), "bad_member"),
        "member '/etc/cron.d/pat'": (tamper(valid, key=key, extra={"/etc/cron.d/pat": b"* * * * * x"}), "bad_member"),
        "unknown member 'notes.txt'": (tamper(valid, key=key, extra={"notes.txt": b"hi"}), "bad_member"),
        f"deflate bomb ({bomb_bytes >> 20} MiB of zeros)": (bomb(), "bad_member"),
        "manifest of 2 MiB": (tamper(valid, text=big_manifest, key=key), "too_large"),
        "n_classes = 2e6": (tamper(valid, _set_config(n_classes=2_000_000), key=key), "bad_architecture"),
        "layers = 40000": (tamper(valid, _set_config(layers=40_000), key=key), "bad_architecture"),
        "channels = 10**6": (tamper(valid, _set_config(channels=10 ** 6), key=key), "bad_architecture"),
        "unknown build setting": (tamper(valid, _set_config(evil=1), key=key), "bad_architecture"),
        "NaN θ": (tamper(valid, payload=_write_theta(valid, float("nan")), key=key), "non_finite"),
        "inf θ": (tamper(valid, payload=_write_theta(valid, float("inf")), key=key), "non_finite"),
        "θ outside theta_range": (tamper(valid, payload=_write_theta(valid, 1e6), key=key), "out_of_range"),
        "NaN constant in manifest": (tamper(valid, key=key, text=lambda s: s.replace('"metadata": {',
                                                                                     '"metadata": {"x": NaN, ', 1)),
                                     "bad_manifest"),
        "integer of 5000 digits": (tamper(valid, key=key, text=lambda s: s.replace(
            '"metadata": {', '"metadata": {"x": ' + "9" * 5000 + ", ", 1)), "bad_manifest"),
        "1e999 (overflows to inf)": (tamper(valid, key=key, text=lambda s: s.replace(
            '"metadata": {', '"metadata": {"x": 1e999, ', 1)), "bad_manifest"),
    }
    return out
