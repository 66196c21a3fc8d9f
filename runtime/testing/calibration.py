"""Helpers for calibration tests: small calibratable artifacts on the fast circuit, labels from a teacher model."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pat_runtime.devices.base import Device
from pat_runtime.artifact import Artifact, dumps, loads, pnn_from_artifact, pnn_to_artifact
from pat_runtime.calibration import CalibrationPlan
from pat_runtime.signing import default_key_path, load_signing_key
from pat_runtime.pat import PNN, build_pnn
from pat_runtime.twins import make_twin

from .core import sim_device

#: the fast circuit of the fleet tests (4 inputs, 1 integration sub-step)
CIRCUIT = {"in_dim": 4, "param_dim": 4, "substeps": 1}
CIRCUIT_URI = "sim:circuit?in_dim=4&param_dim=4&substeps=1&noise=0"


def calibratable_artifact(spec, version: str | int = 1, seed: int = 0, n_features: int = 8, n_classes: int = 3,
                          layers: int = 1, groups: str = "ranges,readout", **meta: Any) -> tuple[Artifact, bytes]:
    """An untrained (seeded) PNN with a calibration plan (nominal twin of the fast circuit)."""
    from pat_runtime.pat import build_pnn
    from pat_runtime.twins import make_twin

    twin = make_twin("nominal", spec, sim_options=dict(CIRCUIT))
    pnn = build_pnn(n_features, n_classes, twin, spec=spec, layers=layers, seed=seed)
    plan = CalibrationPlan.for_model(pnn, groups, sim_options=dict(CIRCUIT), batch=16, lr=0.05)
    art = pnn_to_artifact(pnn, version, metadata={"calibration": plan.to_dict(), "seed": seed, **meta})
    key = load_signing_key() if default_key_path().exists() else None   # signed as `pat deploy` would
    return art, dumps(art, key)


async def teacher_labels(data: bytes, device: Device, x: np.ndarray) -> np.ndarray:
    """Labels that the artifact's model predicts on ``device``: that model scores 100 % there (noise-free)."""
    model = pnn_from_artifact(loads(data, spec=device.spec), device)
    with torch.no_grad():
        return (await model.aforward(torch.from_numpy(np.asarray(x, np.float32)))).argmax(1).numpy()


async def two_circuit_units(units: tuple[int, int] = (1, 2)) -> tuple[list[Device], Any, PNN, np.ndarray, np.ndarray]:
    """Multi-unit test case: two noiseless circuit units, their nominal twin, a 2-layer PNN on 8 features and
    3 classes, and 64 toy samples ``(x, y)`` whose class is set by the first feature."""
    devs = [await sim_device("circuit", unit=u, noise=0.0, **CIRCUIT) for u in units]
    twin = make_twin("nominal", devs[0].spec, sim_options=dict(CIRCUIT))
    model = build_pnn(8, 3, twin, spec=devs[0].spec, layers=2, seed=0)
    x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
    y = (x[:, 0] * 3).astype(np.int64).clip(0, 2)
    return devs, twin, model, x, y
