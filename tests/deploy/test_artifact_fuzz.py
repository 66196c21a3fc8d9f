"""Fuzzing the artifact parser: any bytes give a verified artifact or an ArtifactError, never another exception
(and an artifact that verifies gives a model or an ArtifactError when rebuilt)."""
from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pat_runtime.artifact import ArtifactError, loads, pnn_from_artifact
from pat_runtime.testing import sim_device
from pat_runtime.testing.artifact_attacks import assemble, members, tamper
from pat_runtime.testing.deploy import pnn_artifact

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_dev = asyncio.run(sim_device("circuit", unit=2, seed=5, noise=0.0))
_, VALID = pnn_artifact(_dev, version="1", seed=1, layers=2, sign=False)
MANIFEST = json.loads(members(VALID)["manifest.json"])


def _check(blob: bytes) -> None:
    try:
        art = loads(blob)
    except ArtifactError as e:
        assert e.code and e.message
        assert e.code != "malformed", f"only the catch-all caught it: {e}"  # every defect has a named check
        return
    try:
        pnn_from_artifact(art)
    except ArtifactError as e:
        assert e.code and e.code != "malformed", str(e)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
#: paths into the manifest where a fuzzed value replaces the real one
PATHS = [("format_version",), ("model_version",), ("device",), ("device", "spec"), ("device", "spec", "in_dim"),
         ("device", "spec", "theta_range"), ("layers",), ("architecture",), ("architecture", "config"),
         ("architecture", "config", "n_classes"), ("architecture", "config", "layers"),
         ("architecture", "config", "channels"), ("architecture", "config", "hybrid"), ("normalization",),
         ("normalization", "scale"), ("payload", "tensors"), ("metadata",)]
TENSOR_KEYS = ["dtype", "shape", "offset", "nbytes"]


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(blob):
    _check(blob)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(VALID)))
def test_mutated_valid_artifact(edits, cut):
    blob = bytearray(VALID)
    for pos, val in edits:
        blob[pos] = val
    _check(bytes(blob[:cut]) if cut < 64 else bytes(blob))


@SETTINGS
@given(st.sampled_from(PATHS), json_values)
def test_fuzzed_manifest_fields_with_recomputed_checksums(path, value):
    def edit(m):
        node = m
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    _check(tamper(VALID, edit))


@SETTINGS
@given(st.sampled_from(sorted(MANIFEST["payload"]["tensors"])), st.sampled_from(TENSOR_KEYS),
       st.one_of(st.integers(-2**70, 2**70), st.lists(st.integers(-2**66, 2**66), max_size=10),
                 st.sampled_from(["float32", "int8", "object", "<f4", ""]), json_values))
def test_fuzzed_tensor_table(name, key, value):
    def edit(m):
        m["payload"]["tensors"][name][key] = value
    _check(tamper(VALID, edit))


@SETTINGS
@given(st.binary(max_size=2048), st.binary(max_size=512))
def test_arbitrary_manifest_and_payload_bytes_in_a_valid_container(manifest, payload):
    _check(assemble(manifest, payload))


@pytest.mark.parametrize("blob", [b"", b"PK\x05\x06" + bytes(18), VALID[:22], VALID + b"\0" * 10])
def test_edge_cases(blob):
    _check(blob)
