"""Helpers for deployment tests: small PNN artifacts for a device, and an in-process node with a Deployment."""
from __future__ import annotations

from typing import Any

from pat_runtime.devices.base import Device
from pat_runtime.artifact import Artifact, dumps, pnn_to_artifact
from pat_runtime.signing import SigningKey, default_key_path, load_signing_key


def pnn_artifact(device: Device, version: str | int = 1, seed: int = 0, n_features: int = 64,
                 n_classes: int = 10, layers: int = 1, hybrid: bool = False, sign: bool | SigningKey = True,
                 **meta: Any) -> tuple[Artifact, bytes]:
    """An untrained (seeded) PNN for ``device`` packaged as an artifact; returns (artifact, bytes).

    Different seeds give different θ and weights, so versions are distinguishable by their predictions.
    ``sign``: a key, or True for the default key (``$PAT_HOME/signing.key``) when there is one, or False.
    """
    from pat_runtime.pat import build_pnn
    from pat_runtime.twins import make_twin

    twin = make_twin("mlp", device.spec)
    pnn = build_pnn(n_features, n_classes, twin, spec=device.spec, layers=layers, hybrid=hybrid, seed=seed)
    art = pnn_to_artifact(pnn, version, metadata={"seed": seed, **meta})
    key = sign if isinstance(sign, SigningKey) else (
        load_signing_key() if sign is True and default_key_path().exists() else None)
    return art, dumps(art, key)
