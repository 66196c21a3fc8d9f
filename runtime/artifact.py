"""Deployable PNN artifacts: a versioned, checksummed container of a trained physical neural network.

File format (``*.pnn``) -- a ZIP archive, every member *stored* (uncompressed), fixed timestamps, so
the same model always gives the same bytes::

    manifest.json     UTF-8 JSON, see below
    payload.bin       every tensor as raw little-endian C-order bytes, back to back, each 64-byte aligned
    manifest.sha256   hex sha256 of the manifest.json bytes (the artifact id)
    signature.json    optional: {"alg": "ed25519", "public_key": "ed25519:BASE64", "signature": BASE64}, an
                      Ed25519 signature of the artifact id (see :mod:`pat_runtime.signing`)

``manifest.json``::

    format          "pat-pnn"
    format_version  1                      (readers refuse a newer major format)
    model_version   str                    (e.g. "3" or "2026-11-23.1"; chosen by whoever saves it)
    created         ISO-8601 UTC timestamp
    device          {"kind": spec.kind, "spec": DeviceSpec.to_dict()}
    normalization   {...}                  how raw inputs are mapped before the first layer (free-form)
    layers          [{"type": ..., ...}]   the layer list: physical (θ tensor, channels), range_map, bin_readout,
                                           linear, ... with the names of their tensors
    architecture    {"builder": "pat_runtime.pat.build_pnn", "config": {...}}   how to rebuild the model
    metadata        {...}                  free-form (task, accuracy, training run, ...)
    payload         {"sha256": hex of payload.bin, "nbytes": int,
                     "tensors": {name: {"dtype", "shape", "offset", "nbytes"}}}

Integrity is layered: the ZIP CRC-32 of each member catches accidental corruption, ``payload.sha256``
binds the tensors to the manifest, and ``manifest.sha256`` binds the manifest (the artifact id is that
digest, so two artifacts with the same id are the same model). Checksums prove integrity, not origin: the
signature does that, and edge nodes require one by a trusted key (``loads(..., trusted=...)``). Before
anything is allocated or built, every bound of :mod:`pat_runtime.artifact_limits` is checked (member names and
sizes, manifest size and nesting, tensor shapes, build settings, finite θ inside the device's range).
Every failure, whatever the defect, raises :class:`ArtifactError` whose ``code`` says why (``corrupt``,
``checksum_mismatch``, ``bad_manifest``, ``bad_member``, ``bad_architecture``, ``non_finite``,
``out_of_range``, ``unsupported_version``, ``kind_mismatch``, ``spec_mismatch``, ``too_large``,
``unsigned``, ``untrusted_key``, ``bad_signature``, ``malformed``). See docs/artifacts.md.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.devices.spec import DeviceSpec
from pat_runtime.artifact_errors import ArtifactError
from pat_runtime.artifact_limits import (DEFAULT_LIMITS, MEMBERS, SIGNATURE_MEMBER, ArtifactLimits, check_architecture,
                                     check_finite, check_members, check_normalization, check_tensor_table,
                                     check_theta_ranges, member_cap, parse_manifest, tensor_extent)
from pat_runtime.files import atomic_write  # re-exported: the one atomic-write helper
from pat_runtime.signing import (KeyFileError, SigningKey, TrustedKeys, key_id, load_signing_key, parse_public_key,
                             verify)

log = logging.getLogger(__name__)

FORMAT = "pat-pnn"
FORMAT_VERSION = 1
ALIGN = 64
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024
ALLOWED_DTYPES = frozenset({"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"})
_MEMBERS = MEMBERS
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
#: spec fields that must agree between an artifact and the device it runs on
SPEC_KEYS = ("kind", "in_dim", "param_dim", "out_dim", "x_range", "theta_range")


@dataclass
class Artifact:
    """A loaded (verified) or freshly built artifact: manifest plus named tensors."""

    manifest: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    #: hex sha256 of the manifest bytes; set by :func:`dumps` / :func:`loads`
    artifact_id: str = ""
    #: raw Ed25519 public key whose valid signature the artifact carries (None: unsigned)
    signer: bytes | None = None

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def spec(self) -> DeviceSpec:
        return DeviceSpec.from_dict(self.manifest["device"]["spec"])

    @property
    def device_kind(self) -> str:
        return str(self.manifest["device"]["kind"])

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.manifest["layers"]

    @property
    def normalization(self) -> dict[str, Any]:
        return self.manifest.get("normalization", {})

    @property
    def metadata(self) -> dict[str, Any]:
        return self.manifest.get("metadata", {})

    def summary(self) -> dict[str, Any]:
        """A short description (for logs, STATUS replies and ``pat deploy --inspect``)."""
        return {"artifact_id": self.artifact_id, "model_version": self.model_version,
                "created": self.manifest.get("created"), "device_kind": self.device_kind,
                "layers": [layer.get("type") for layer in self.layers],
                "signed_by": key_id(self.signer) if self.signer else None,
                "n_params": int(sum(t.size for t in self.tensors.values()))}


def build_artifact(tensors: Mapping[str, Any], layers: list[dict[str, Any]], spec: DeviceSpec,
                   model_version: str | int, normalization: Mapping[str, Any] | None = None,
                   metadata: Mapping[str, Any] | None = None, created: str | None = None,
                   architecture: Mapping[str, Any] | None = None) -> Artifact:
    """Assemble an artifact (not yet serialized). Tensors may be numpy arrays or torch tensors."""
    arrs: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        if hasattr(t, "detach"):
            t = t.detach().cpu().numpy()
        a = np.ascontiguousarray(t)
        if a.dtype.name not in ALLOWED_DTYPES:
            raise ArtifactError(ErrorCode.BAD_MANIFEST, f"tensor {name!r} has unsupported dtype {a.dtype}")
        arrs[str(name)] = a
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("type"), str):
            raise ArtifactError(ErrorCode.BAD_MANIFEST, f"layer {i} must be a dict with a string 'type'")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": str(model_version),
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {"kind": spec.kind, "spec": spec.to_dict()},
        "normalization": _jsonable(dict(normalization or {})),
        "layers": _jsonable(list(layers)),
        "architecture": _jsonable(dict(architecture or {})),
        "metadata": _jsonable(dict(metadata or {})),
    }
    return Artifact(manifest=manifest, tensors=arrs)


# ----- serialization -------------------------------------------------------------------------------------
def dumps(artifact: Artifact, key: SigningKey | None = None) -> bytes:
    """Serialize to the ``.pnn`` bytes (deterministic for a given manifest and tensors), signed by ``key``
    when given (see :mod:`pat_runtime.signing`)."""
    payload = io.BytesIO()
    table: dict[str, dict[str, Any]] = {}
    for name in sorted(artifact.tensors):
        a = artifact.tensors[name]
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
        pad = (-payload.tell()) % ALIGN
        payload.write(b"\0" * pad)
        table[name] = {"dtype": a.dtype.name, "shape": list(a.shape), "offset": payload.tell(),
                       "nbytes": int(a.nbytes)}
        payload.write(a.tobytes(order="C"))
    pb = payload.getvalue()
    manifest = dict(artifact.manifest)
    manifest["payload"] = {"sha256": hashlib.sha256(pb).hexdigest(), "nbytes": len(pb), "tensors": table}
    mb = json.dumps(manifest, sort_keys=True, indent=1).encode()
    digest = hashlib.sha256(mb).hexdigest()
    artifact.manifest = manifest
    artifact.artifact_id = digest
    data = _zip([mb, pb, digest.encode()])
    if key is not None:
        data = sign_artifact(data, key)
        artifact.signer = key.public_raw
    return data


def loads(data: bytes | bytearray | memoryview, spec: DeviceSpec | None = None,
          max_bytes: int = MAX_ARTIFACT_BYTES, trusted: TrustedKeys | None = None,
          limits: ArtifactLimits = DEFAULT_LIMITS) -> Artifact:
    """Parse and verify ``.pnn`` bytes; with ``spec``, also check the artifact fits that device; with
    ``trusted``, also require a valid signature by one of those keys.

    Every bound of :mod:`pat_runtime.artifact_limits` is checked before anything is allocated or built.
    Raises :class:`ArtifactError` on anything wrong, whatever the defect; never returns a partially
    verified artifact.
    """
    try:
        return _loads(bytes(data), spec, max_bytes, trusted, limits)
    except ArtifactError:
        raise
    except RecursionError:
        raise ArtifactError(ErrorCode.BAD_MANIFEST, "artifact is nested too deeply") from None
    except Exception as e:  # a defect no check above names: still a refusal with its reason, never a crash
        log.warning("artifact refused by the catch-all (%s: %s); please report this defect", type(e).__name__, e)
        raise ArtifactError(ErrorCode.MALFORMED,
                            f"artifact could not be parsed ({type(e).__name__}: {str(e)[:200]})") from None


def _loads(data: bytes, spec: DeviceSpec | None, max_bytes: int, trusted: TrustedKeys | None,
           limits: ArtifactLimits) -> Artifact:
    max_bytes = min(max_bytes, limits.max_bytes)
    if len(data) > max_bytes:
        raise ArtifactError(ErrorCode.TOO_LARGE, f"artifact is {len(data)} bytes > limit {max_bytes}")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as e:
        raise ArtifactError(ErrorCode.CORRUPT, f"not a PNN artifact (not a readable zip container: {e})") from None
    with zf:
        names = check_members(zf.infolist(), limits)
        try:
            mb, pb, digest = (_read_member(zf, m, member_cap(m, limits)) for m in _MEMBERS)
            sig = (_read_member(zf, SIGNATURE_MEMBER, member_cap(SIGNATURE_MEMBER, limits))
                   if SIGNATURE_MEMBER in names else None)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
                NotImplementedError) as e:
            raise ArtifactError(ErrorCode.CORRUPT, f"artifact data is damaged ({e})") from None
    aid = digest.decode("ascii", "replace").strip()
    if hashlib.sha256(mb).hexdigest() != aid:
        raise ArtifactError(ErrorCode.CHECKSUM_MISMATCH, "manifest sha256 does not match manifest.sha256")
    signer = _check_signature(sig, aid) if sig is not None else None
    if trusted is not None:
        trusted.check(signer)  # before the manifest is even parsed: untrusted input goes no further
    manifest = parse_manifest(mb, limits)
    _check_manifest(manifest)
    try:
        art_spec = DeviceSpec.from_dict(manifest["device"]["spec"])
    except (TypeError, ValueError, KeyError) as e:
        raise ArtifactError(ErrorCode.BAD_MANIFEST, f"embedded device spec is invalid: {e}") from None
    check_normalization(manifest.get("normalization"))
    check_architecture(manifest, limits)
    pay = manifest["payload"]
    if len(pb) != pay["nbytes"]:
        raise ArtifactError(ErrorCode.CHECKSUM_MISMATCH, f"payload is {len(pb)} bytes, manifest says {pay['nbytes']}")
    if hashlib.sha256(pb).hexdigest() != pay["sha256"]:
        raise ArtifactError(ErrorCode.CHECKSUM_MISMATCH, "payload sha256 does not match the manifest (tensors altered)")
    check_tensor_table(pay["tensors"], limits)
    tensors = {}
    for name, meta in pay["tensors"].items():
        tensors[name] = _read_tensor(pb, name, meta, limits)
    check_theta_ranges(manifest, tensors, art_spec.theta_range)
    art = Artifact(manifest=manifest, tensors=tensors, artifact_id=aid, signer=signer)
    if spec is not None:
        check_compatible(art, spec)
    return art


def _read_member(zf: zipfile.ZipFile, name: str, cap: int) -> bytes:
    """Read at most ``cap`` bytes of a member (whatever its header claims): no decompression bomb."""
    with zf.open(name) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ArtifactError(ErrorCode.TOO_LARGE, f"member {name!r} holds more than {cap} bytes")
    return data


def _check_signature(sig: bytes, artifact_id: str) -> bytes:
    """Parse ``signature.json`` and verify it over the artifact id; returns the signer's raw public key."""
    try:
        d = json.loads(sig)
        if not isinstance(d, dict) or d.get("alg") != "ed25519":
            raise ValueError("expected {\"alg\": \"ed25519\", \"public_key\", \"signature\"}")
        raw = parse_public_key(str(d.get("public_key", "")))
        signature = base64.b64decode(str(d.get("signature", "")), validate=True)
    except (ValueError, KeyFileError, RecursionError) as e:
        raise ArtifactError(ErrorCode.BAD_SIGNATURE, f"signature.json is malformed ({str(e)[:200]})") from None
    if not verify(raw, artifact_id, signature):
        raise ArtifactError(ErrorCode.BAD_SIGNATURE, f"the signature by key {key_id(raw)} does not match this artifact "
                                                     "(altered after signing, or forged)")
    return raw


def sign_artifact(data: bytes, key: SigningKey) -> bytes:
    """Return ``data`` (a valid ``.pnn``) signed by ``key``, replacing any earlier signature.

    The artifact id (manifest digest) does not change: signing is about origin, not content.
    """
    art = loads(data)
    sig = json.dumps({"alg": "ed25519", "public_key": key.public_text,
                      "signature": base64.b64encode(key.sign(art.artifact_id)).decode("ascii")}).encode()
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        parts = [zf.read(m) for m in _MEMBERS]
    return _zip(parts, sig)


def ensure_signed(data: bytes, key: SigningKey | None = None, key_path: str | os.PathLike | None = None,
                  resign: bool = False) -> bytes:
    """``data`` signed: as is when it already carries a valid signature (and ``resign`` is False), else signed
    with ``key`` or the key file ``key_path`` (default ``$PAT_HOME/signing.key``). Raises ArtifactError for a
    bad artifact and :class:`pat_runtime.signing.KeyFileError` when no usable key exists."""
    art = loads(data)
    if art.signer is not None and not resign:
        return bytes(data)
    return sign_artifact(data, key or load_signing_key(key_path))


def _zip(parts: list[bytes], sig: bytes | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for member, blob in zip(_MEMBERS, parts):
            zf.writestr(zipfile.ZipInfo(member, date_time=_ZIP_TIME), blob)
        if sig is not None:
            zf.writestr(zipfile.ZipInfo(SIGNATURE_MEMBER, date_time=_ZIP_TIME), sig)
    return out.getvalue()


def save_artifact(path: str | os.PathLike, artifact: Artifact, key: SigningKey | None = None) -> str:
    """Write atomically (temp file + rename), signed by ``key`` when given; return the artifact id."""
    data = dumps(artifact, key)
    atomic_write(Path(path), data)
    return artifact.artifact_id


def load_artifact(path: str | os.PathLike, spec: DeviceSpec | None = None,
                  trusted: TrustedKeys | None = None) -> Artifact:
    """Read and verify a ``.pnn`` file (see :func:`loads`)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_ARTIFACT_BYTES:
            raise ArtifactError(ErrorCode.TOO_LARGE, f"{path} is {p.stat().st_size} bytes > limit {MAX_ARTIFACT_BYTES}")
        data = p.read_bytes()
    except OSError as e:
        raise ArtifactError(ErrorCode.UNREADABLE, f"cannot read artifact {path}: {e}") from None
    return loads(data, spec=spec, trusted=trusted)


def check_compatible(artifact: Artifact, spec: DeviceSpec) -> None:
    """Raise ``kind_mismatch`` / ``spec_mismatch`` unless ``artifact`` was trained for a device like ``spec``."""
    mine = artifact.spec
    if mine.kind != spec.kind:
        raise ArtifactError(ErrorCode.KIND_MISMATCH, f"artifact was trained for device kind {mine.kind!r}, "
                                                     f"this device is {spec.kind!r}")
    a, b = mine.to_dict(), spec.to_dict()
    diffs = [f"{k}: artifact {a[k]} vs device {b[k]}" for k in SPEC_KEYS if a[k] != b[k]]
    if diffs:
        raise ArtifactError(ErrorCode.SPEC_MISMATCH, "artifact does not fit this device (" + "; ".join(diffs) + ")")


# ----- PNN <-> artifact ----------------------------------------------------------------------------------
def pnn_to_artifact(pnn: Any, model_version: str | int, normalization: Mapping[str, Any] | None = None,
                    metadata: Mapping[str, Any] | None = None, created: str | None = None) -> Artifact:
    """Package a trained :class:`pat_runtime.pat.PNN` (θ per physical layer, digital weights, spec, architecture).

    ``normalization`` maps raw inputs to the model's features (:func:`normalize`); default identity.
    """
    from torch import nn

    from pat_runtime.pat import BinReadout, PhysicalLayer, RangeMap

    cfg = dict(getattr(pnn, "config", {}) or {})
    if "n_features" not in cfg or "n_classes" not in cfg:
        raise ArtifactError(ErrorCode.UNSUPPORTED_MODEL,
                            "only PNNs made by pat_runtime.pat.build_pnn (with a config) can be "
                            "packaged: the artifact must say how to rebuild the model")
    state = pnn.state_dict()
    layers: list[dict[str, Any]] = []
    for i, s in enumerate(pnn.stages):
        pre = f"stages.{i}."
        names = {k[len(pre):]: k for k in state if k.startswith(pre)}
        if isinstance(s, PhysicalLayer):
            layers.append({"type": "physical", "name": s.name, "channels": s.channels, "theta": names["theta"],
                           "in": s.n_in, "out": s.n_out})
        elif isinstance(s, RangeMap):
            layers.append({"type": "range_map", "in": s.n_in, "out": s.n_out, "lo": s.lo, "hi": s.hi,
                           "pad": s.pad, "tensors": names})
        elif isinstance(s, BinReadout):
            layers.append({"type": "bin_readout", "in": int(s.bins.shape[1]), "out": int(s.bins.shape[0]),
                           "tensors": names})
        elif isinstance(s, nn.Linear):
            layers.append({"type": "linear", "in": s.in_features, "out": s.out_features, "tensors": names})
        else:
            layers.append({"type": type(s).__name__, "tensors": names})
    norm = dict(normalization or {"type": "identity"})
    norm.setdefault("n_features", cfg["n_features"])
    return build_artifact(state, layers, pnn.spec, model_version, normalization=norm, metadata=metadata,
                          created=created, architecture={"builder": "pat_runtime.pat.build_pnn", "config": cfg})


def pnn_from_artifact(artifact: Artifact, device: Any = None, twin: Any = None) -> Any:
    """Rebuild the :class:`pat_runtime.pat.PNN` of ``artifact`` (on ``device`` for physical inference).

    Without ``twin`` the model can run forward on the device (``aforward`` under ``torch.no_grad``) but
    cannot be trained or run in silico.
    """
    import torch

    from pat_runtime.pat import build_pnn

    arch = artifact.manifest.get("architecture") or {}
    # artifacts written before the pat_runtime namespace (issue 10) name the same builder by its old path
    if arch.get("builder") not in ("pat_runtime.pat.build_pnn", "runtime.pat.build_pnn") \
            or not isinstance(arch.get("config"), dict):  # rename: keep
        raise ArtifactError(ErrorCode.BAD_MANIFEST, f"unknown model builder {arch.get('builder')!r}")
    if device is not None and getattr(device, "connected", False):
        check_compatible(artifact, device.spec)
    check_architecture(artifact.manifest)  # bounded before building, also for artifacts built in memory
    try:
        model = build_pnn(spec=artifact.spec, device=device, twin=twin or _no_twin, **arch["config"])
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in artifact.tensors.items()}, strict=True)
    except ArtifactError:
        raise
    except Exception as e:  # whatever building a declared model raises, it is a refusal
        raise ArtifactError(ErrorCode.BAD_MANIFEST, f"the tensors do not fit the declared architecture: {e}") from None
    model.eval()
    return model


def _no_twin(x, theta):
    raise RuntimeError("deployed model has no twin: it runs forward on its device only")


def normalize(x: np.ndarray, normalization: Mapping[str, Any]) -> np.ndarray:
    """Map raw inputs to model features: ``identity`` or ``affine`` ``(x - offset) * scale`` (then clip to
    ``clip`` if given). Also checks the feature count (``n_features``)."""
    x = np.array(x, np.float32)  # a private, writable copy
    if x.ndim == 1:
        x = x[None]
    n = normalization.get("n_features")
    if x.ndim != 2 or (n is not None and x.shape[1] != n):
        raise ValueError(f"inputs must have shape [B, {n}], got {list(x.shape)}")
    if x.shape[0] == 0 or not np.all(np.isfinite(x)):
        raise ValueError("inputs must be a non-empty batch of finite numbers")
    kind = normalization.get("type", "identity")
    if kind == "affine":
        x = (x - np.asarray(normalization.get("offset", 0.0), np.float32)) * np.asarray(
            normalization.get("scale", 1.0), np.float32)
    elif kind != "identity":
        raise ValueError(f"unknown normalization type {kind!r}")
    if normalization.get("clip") is not None:
        lo, hi = normalization["clip"]
        x = np.clip(x, lo, hi)
    return np.ascontiguousarray(x, np.float32)


# ----- helpers -------------------------------------------------------------------------------------------
def _check_manifest(m: Any) -> None:
    if not isinstance(m, dict):
        raise ArtifactError(ErrorCode.BAD_MANIFEST, "manifest is not a JSON object")
    if m.get("format") != FORMAT:
        raise ArtifactError(ErrorCode.BAD_MANIFEST, f"format is {m.get('format')!r}, expected {FORMAT!r}")
    v = m.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise ArtifactError(ErrorCode.BAD_MANIFEST, f"format_version {v!r} is not an int")
    if v > FORMAT_VERSION or v < 1:
        raise ArtifactError(ErrorCode.UNSUPPORTED_VERSION,
                            f"artifact format_version {v} is not supported (this reader knows 1..{FORMAT_VERSION})")
    for key, typ in (("model_version", str), ("created", str), ("device", dict), ("layers", list),
                     ("payload", dict)):
        if not isinstance(m.get(key), typ):
            raise ArtifactError(ErrorCode.BAD_MANIFEST, f"manifest field {key!r} missing or not a {typ.__name__}")
    dev = m["device"]
    if not isinstance(dev.get("kind"), str) or not isinstance(dev.get("spec"), dict):
        raise ArtifactError(ErrorCode.BAD_MANIFEST, "manifest 'device' needs a string 'kind' and a 'spec' object")
    if dev["spec"].get("kind") != dev["kind"]:
        raise ArtifactError(ErrorCode.BAD_MANIFEST, "device.kind disagrees with device.spec.kind")
    pay = m["payload"]
    if not isinstance(pay.get("sha256"), str) or not isinstance(pay.get("nbytes"), int) \
            or not isinstance(pay.get("tensors"), dict):
        raise ArtifactError(ErrorCode.BAD_MANIFEST, "manifest 'payload' needs sha256, nbytes and tensors")
    for i, layer in enumerate(m["layers"]):
        if not isinstance(layer, dict) or not isinstance(layer.get("type"), str):
            raise ArtifactError(ErrorCode.BAD_MANIFEST, f"layer {i} must be an object with a string 'type'")


def _read_tensor(pb: bytes, name: str, meta: Any, limits: ArtifactLimits = DEFAULT_LIMITS) -> np.ndarray:
    dt, shape, off, n = tensor_extent(name, meta, len(pb), ALLOWED_DTYPES, limits)
    dtype = np.dtype(dt).newbyteorder("<")
    a = np.frombuffer(pb, dtype=dtype, count=n // dtype.itemsize, offset=off).reshape(shape).astype(
        np.dtype(dt), copy=True)
    check_finite(name, a)
    return a


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and tuples so the manifest is plain JSON; reject anything else."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "detach"):
        return obj.detach().cpu().numpy().tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise ArtifactError(ErrorCode.BAD_MANIFEST, f"value of type {type(obj).__name__} cannot go in a manifest")
