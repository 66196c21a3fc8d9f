"""Digital twins ``f_m(x, θ) ≈ f_p(x, θ)`` of physical devices.

* :func:`collect` — measure random ``(x, θ)`` (θ shared per batch, repeats for the noise floor).
* :class:`MLPTwin` (black box), :class:`GreyBoxTwin` (nominal physics + learnable calibration),
  :class:`ResidualTwin` (grey box + MLP correction), :class:`NominalTwin` (datasheet physics, unfitted).
* :func:`fit_twin` -> :class:`TwinReport` (held-out NMSE, noise floor); :func:`save_twin` / :func:`load_twin`.
* :func:`build_twin` — collect, make and fit in one call for a connected device.
"""
from __future__ import annotations

from typing import Any

from devices.base import Device

from .base import TWIN_FORMAT, Twin, load_twin, make_twin, save_twin, twin_from_dict, twin_kinds, twin_to_dict
from .collect import TwinData, collect
from .fit import TwinReport, evaluate_twin, fit_twin, nmse
from .greybox import GreyBoxTwin, NominalTwin, nominal_sim, sim_options_of
from .mlp import MLPTwin
from .residual import ResidualTwin

#: default data and epochs per kind (fast enough for 2 CPU cores, see docs/RESULTS.md)
DEFAULTS: dict[str, dict[str, int]] = {
    "nominal": {"n_samples": 1024, "epochs": 0},
    "greybox": {"n_samples": 2048, "epochs": 15},
    "residual": {"n_samples": 4096, "epochs": 25},
    "mlp": {"n_samples": 16384, "epochs": 60},
}


async def build_twin(device: Device, kind: str, n_samples: int | None = None, epochs: int | None = None,
                     seed: int = 0, repeats: int = 2, data: TwinData | None = None,
                     **fit_kw: Any) -> tuple[Twin, TwinReport, TwinData]:
    """Collect data on ``device`` (unless ``data`` is given), make a ``kind`` twin and fit it."""
    d = DEFAULTS.get(kind, DEFAULTS["mlp"])
    opts = {"sim_options": sim_options_of(device)} if kind in ("nominal", "greybox", "residual") else {}
    import torch

    with torch.random.fork_rng(devices=[]):          # reproducible initial weights
        torch.manual_seed(seed)
        twin = make_twin(kind, device.spec, **opts)
    if data is None:
        n = int(n_samples or d["n_samples"])
        data = await collect(device, n, batch=min(256, max(32, n // 16)), repeats=repeats, seed=seed)
    report = fit_twin(twin, data, epochs=d["epochs"] if epochs is None else epochs, seed=seed, **fit_kw)
    return twin, report, data


__all__ = ["DEFAULTS", "GreyBoxTwin", "MLPTwin", "NominalTwin", "ResidualTwin", "TWIN_FORMAT", "Twin", "TwinData",
           "TwinReport", "build_twin", "collect", "evaluate_twin", "fit_twin", "load_twin", "make_twin", "nmse", "nominal_sim",
           "save_twin", "sim_options_of", "twin_from_dict", "twin_kinds", "twin_to_dict"]
