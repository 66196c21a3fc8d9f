"""Bounds every ``.pnn`` artifact must satisfy *before* anything is parsed deeply, allocated or built.

An artifact comes from the network (a deploy request, a retained MQTT message) and is hostile until proven
otherwise. :mod:`pat_runtime.artifact` calls these checks in order, cheapest first, and each failure is an
:class:`~pat_runtime.artifact.ArtifactError` with a code and a reason that names the defect::

    container   known member names only (no unknown, absolute or ``../`` names, no duplicates), every member
                stored uncompressed, each member's size bounded (no decompression bombs)
    manifest    size, JSON nesting depth, number of JSON values, string lengths; no NaN/Infinity constants,
                no numbers that overflow to inf, no integers with thousands of digits
    tensors     count, name length, dtype, rank, every dimension and the total size (Python integers: a
                shape like [2**64] cannot overflow), offsets inside the payload; float tensors finite
    model       the builder config: known keys, integer ranges (n_classes, layers, channels, ...) and the
                number of parameters the builder would allocate, computed from the config alone
    θ           every physical layer's θ inside the device's declared ``theta_range``

The limits are generous for real models (a digits PNN is a few KiB) and small enough that a refused
artifact costs milliseconds and no memory worth mentioning.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.artifact_errors import ArtifactError

#: members a ``.pnn`` may contain, in the order they are written
MEMBERS = ("manifest.json", "payload.bin", "manifest.sha256")
SIGNATURE_MEMBER = "signature.json"
KNOWN_MEMBERS = frozenset(MEMBERS + (SIGNATURE_MEMBER,))
#: keys of ``architecture.config`` understood by ``pat_runtime.pat.build_pnn``
BUILD_KEYS = frozenset({"n_features", "n_classes", "layers", "hybrid", "channels", "seed"})
NORMALIZATIONS = frozenset({"identity", "affine"})


@dataclass(frozen=True)
class ArtifactLimits:
    max_bytes: int = 256 * 1024 * 1024        # whole artifact (and the payload member)
    max_manifest_bytes: int = 1024 * 1024
    max_signature_bytes: int = 4096
    max_depth: int = 16                        # JSON nesting of the manifest
    max_values: int = 200_000                  # JSON values in the manifest
    max_string: int = 64 * 1024                # characters of any manifest string
    max_tensors: int = 256
    max_name: int = 256                        # characters of a tensor name
    max_ndim: int = 8
    max_features: int = 1 << 16
    max_classes: int = 4096
    max_layers: int = 64                       # physical layers of one PNN
    max_channels: int = 4096
    max_params: int = 1 << 24                  # parameters the builder would allocate (64 MiB as float32)
    max_spec_dim: int = 4096                   # in_dim / param_dim / out_dim of the embedded device spec


DEFAULT_LIMITS = ArtifactLimits()


def _err(code: str, message: str) -> ArtifactError:
    return ArtifactError(code, message)


# ----- container -------------------------------------------------------------------------------------------
def check_members(infolist: list[Any], limits: ArtifactLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Names, compression and sizes of the ZIP members, from the central directory (nothing is read yet)."""
    import zipfile

    if len(infolist) > len(KNOWN_MEMBERS):
        raise _err(ErrorCode.BAD_MEMBER,
                   f"artifact has {len(infolist)} members; a .pnn has at most {len(KNOWN_MEMBERS)}")
    names: dict[str, Any] = {}
    for info in infolist:
        name = info.filename
        if name not in KNOWN_MEMBERS:
            raise _err(ErrorCode.BAD_MEMBER,
                       f"unknown member {name[:80]!r} (a .pnn holds only {sorted(KNOWN_MEMBERS)}; "
                       f"absolute, '../' and extra names are refused)")
        if name in names:
            raise _err(ErrorCode.BAD_MEMBER, f"member {name!r} appears twice")
        if info.compress_type != zipfile.ZIP_STORED:
            raise _err(ErrorCode.BAD_MEMBER,
                       f"member {name!r} is compressed (method {info.compress_type}); .pnn members "
                       f"are stored uncompressed, so a small file cannot inflate into a huge one")
        cap = member_cap(name, limits)
        if info.file_size > cap or info.compress_size > cap:
            raise _err(ErrorCode.TOO_LARGE, f"member {name!r} declares {max(info.file_size, info.compress_size)} bytes "
                                            f"> limit {cap}")
        names[name] = info
    missing = [m for m in MEMBERS if m not in names]
    if missing:
        raise _err(ErrorCode.CORRUPT, f"artifact lacks member(s) {missing}")
    return names


def member_cap(name: str, limits: ArtifactLimits = DEFAULT_LIMITS) -> int:
    return {"manifest.json": limits.max_manifest_bytes, "manifest.sha256": 128,
            SIGNATURE_MEMBER: limits.max_signature_bytes}.get(name, limits.max_bytes)


# ----- manifest JSON ---------------------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise _err(ErrorCode.BAD_MANIFEST, f"manifest contains the non-JSON constant {name} (NaN/Infinity are not allowed)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _err(ErrorCode.BAD_MANIFEST, f"manifest number {text[:40]} overflows to infinity")
    return v


def parse_manifest(mb: bytes, limits: ArtifactLimits = DEFAULT_LIMITS) -> Any:
    """``json.loads`` with size, nesting, value-count and number checks; raises ArtifactError."""
    if len(mb) > limits.max_manifest_bytes:
        raise _err(ErrorCode.TOO_LARGE, f"manifest.json is {len(mb)} bytes > limit {limits.max_manifest_bytes}")
    try:
        obj = json.loads(mb, parse_constant=_no_constant, parse_float=_finite_float)
    except ArtifactError:
        raise
    except RecursionError:
        raise _err(ErrorCode.BAD_MANIFEST, f"manifest.json is nested too deeply (limit {limits.max_depth})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _err(ErrorCode.BAD_MANIFEST, f"manifest.json is not valid JSON ({e})") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise _err(ErrorCode.BAD_MANIFEST, f"manifest.json holds an unusable number ({e})") from None
    check_json_shape(obj, limits)
    return obj


def check_json_shape(obj: Any, limits: ArtifactLimits = DEFAULT_LIMITS) -> None:
    """Iterative walk: nesting depth, number of values, string lengths (no recursion, bounded work)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    count = 0
    while stack:
        v, depth = stack.pop()
        count += 1
        if count > limits.max_values:
            raise _err(ErrorCode.BAD_MANIFEST, f"manifest has more than {limits.max_values} JSON values")
        if depth > limits.max_depth:
            raise _err(ErrorCode.BAD_MANIFEST, f"manifest is nested deeper than {limits.max_depth} levels")
        if isinstance(v, dict):
            for k, item in v.items():
                if len(k) > limits.max_string:
                    raise _err(ErrorCode.BAD_MANIFEST, f"manifest key of {len(k)} characters > {limits.max_string}")
                stack.append((item, depth + 1))
        elif isinstance(v, list):
            stack.extend((item, depth + 1) for item in v)
        elif isinstance(v, str) and len(v) > limits.max_string:
            raise _err(ErrorCode.BAD_MANIFEST, f"manifest string of {len(v)} characters > {limits.max_string}")


# ----- tensors ---------------------------------------------------------------------------------------------
def tensor_extent(name: Any, meta: Any, payload_nbytes: int, allowed_dtypes: frozenset[str],
                  limits: ArtifactLimits = DEFAULT_LIMITS) -> tuple[str, tuple[int, ...], int, int]:
    """Validate one tensor table entry; returns (dtype, shape, offset, nbytes), all inside the payload."""
    if not isinstance(name, str) or not name or len(name) > limits.max_name:
        raise _err(ErrorCode.BAD_MANIFEST, f"tensor name {str(name)[:40]!r} invalid (1..{limits.max_name} characters)")
    if not isinstance(meta, dict):
        raise _err(ErrorCode.BAD_MANIFEST, f"tensor {name!r}: entry is not an object")
    dt, shape, off, n = meta.get("dtype"), meta.get("shape"), meta.get("offset"), meta.get("nbytes")
    if not isinstance(dt, str) or dt not in allowed_dtypes:
        raise _err(ErrorCode.BAD_MANIFEST, f"tensor {name!r}: dtype {str(dt)[:40]!r} not allowed")
    if (not isinstance(shape, list) or len(shape) > limits.max_ndim
            or not all(type(s) is int and 0 <= s <= payload_nbytes for s in shape)):
        raise _err(ErrorCode.BAD_MANIFEST, f"tensor {name!r}: bad shape {str(shape)[:80]} (at most {limits.max_ndim} "
                                           f"non-negative ints, none larger than the payload)")
    need = math.prod(shape) * np.dtype(dt).itemsize  # Python ints: no overflow
    if type(off) is not int or type(n) is not int or n != need or off < 0 or off + n > payload_nbytes:
        raise _err(ErrorCode.BAD_MANIFEST,
                   f"tensor {name!r}: offset/size out of bounds (shape {shape} needs {need} bytes)")
    return dt, tuple(shape), off, n


def check_tensor_table(table: Any, limits: ArtifactLimits = DEFAULT_LIMITS) -> None:
    if not isinstance(table, dict) or len(table) > limits.max_tensors:
        raise _err(ErrorCode.BAD_MANIFEST,
                   f"payload.tensors must be an object with at most {limits.max_tensors} entries")


def check_finite(name: str, a: np.ndarray) -> None:
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        raise _err(ErrorCode.NON_FINITE, f"tensor {name!r} contains NaN or inf")


# ----- model -----------------------------------------------------------------------------------------------
def _int_in(cfg: Mapping[str, Any], key: str, lo: int, hi: int, default: Any = None) -> int:
    v = cfg.get(key, default)
    if type(v) is not int or not lo <= v <= hi:
        raise _err(ErrorCode.BAD_ARCHITECTURE,
                   f"architecture.config.{key} = {str(v)[:40]} is not an integer in [{lo}, {hi}]")
    return v


def check_architecture(manifest: Mapping[str, Any], limits: ArtifactLimits = DEFAULT_LIMITS) -> None:
    """Bound the build settings so that building the declared model is cheap (checked before building)."""
    arch = manifest.get("architecture")
    if arch in (None, {}):
        return  # nothing to build (a bare artifact); pnn_from_artifact refuses it by itself
    if not isinstance(arch, dict):
        raise _err(ErrorCode.BAD_ARCHITECTURE, "manifest 'architecture' is not an object")
    cfg = arch.get("config")
    if not isinstance(cfg, dict):
        raise _err(ErrorCode.BAD_ARCHITECTURE, "architecture.config is missing or not an object")
    unknown = sorted(set(cfg) - BUILD_KEYS)
    if unknown:
        raise _err(ErrorCode.BAD_ARCHITECTURE, f"architecture.config has unknown keys {unknown[:5]} "
                                               f"(known: {sorted(BUILD_KEYS)})")
    spec = manifest["device"]["spec"]
    dims = [_int_in(spec, k, 1, limits.max_spec_dim) for k in ("in_dim", "param_dim", "out_dim")]
    n_in, n_p, n_out = dims
    f = _int_in(cfg, "n_features", 1, limits.max_features)
    k = _int_in(cfg, "n_classes", 1, limits.max_classes)
    layers = _int_in(cfg, "layers", 1, limits.max_layers, default=2)
    c = cfg.get("channels")
    c = max(1, math.ceil(f / n_in)) if c is None else _int_in(cfg, "channels", 1, limits.max_channels)
    if type(cfg.get("seed", 0)) is not int or not isinstance(cfg.get("hybrid", False), bool):
        raise _err(ErrorCode.BAD_ARCHITECTURE, "architecture.config: seed must be an int and hybrid a bool")
    # what build_pnn allocates: range maps (2 per input width), θ per layer, readout, optional linear layers
    params = layers * (c * n_p + 2 * c * n_in) + c * n_out * k + 2 * k
    if cfg.get("hybrid"):
        params += f * c * n_in + c * n_in + c * n_out * k
    if params > limits.max_params:
        raise _err(ErrorCode.BAD_ARCHITECTURE, f"the declared model would allocate ~{params} parameters "
                                               f"> limit {limits.max_params}")


def check_normalization(norm: Any) -> None:
    if norm is None:
        return
    if not isinstance(norm, dict):
        raise _err(ErrorCode.BAD_MANIFEST, "manifest 'normalization' is not an object")
    kind = norm.get("type", "identity")
    if kind not in NORMALIZATIONS:
        raise _err(ErrorCode.BAD_MANIFEST,
                   f"normalization type {str(kind)[:40]!r} unknown (known: {sorted(NORMALIZATIONS)})")
    n = norm.get("n_features")
    if n is not None and (type(n) is not int or n < 1):
        raise _err(ErrorCode.BAD_MANIFEST, f"normalization.n_features {str(n)[:40]} is not a positive int")
    for key in ("offset", "scale"):
        v = norm.get(key)
        if v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
            continue
        if not (isinstance(v, list) and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v)
                and (n is None or len(v) == n)):
            raise _err(ErrorCode.BAD_MANIFEST, f"normalization.{key} must be a number or a list of n_features numbers")
    clip = norm.get("clip")
    if clip is not None and not (isinstance(clip, list) and len(clip) == 2
                                 and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in clip)
                                 and clip[0] <= clip[1]):
        raise _err(ErrorCode.BAD_MANIFEST, "normalization.clip must be [lo, hi] with lo <= hi")


def check_theta_ranges(manifest: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                       theta_range: tuple[float, float]) -> None:
    """Every physical layer's θ tensor exists and lies inside the device spec's ``theta_range``."""
    lo, hi = theta_range
    for i, layer in enumerate(manifest["layers"]):
        if layer.get("type") != "physical" or "theta" not in layer:
            continue
        t = tensors.get(layer["theta"]) if isinstance(layer["theta"], str) else None
        if t is None:
            raise _err(ErrorCode.BAD_MANIFEST, f"physical layer {i} names θ tensor {str(layer['theta'])[:60]!r}, "
                                               f"which the payload lacks")
        if t.size and (float(t.min()) < lo or float(t.max()) > hi):
            raise _err(ErrorCode.OUT_OF_RANGE,
                       f"physical layer {i}: θ in [{float(t.min()):.4g}, {float(t.max()):.4g}] "
                       f"leaves the device's safe theta_range [{lo}, {hi}]")
