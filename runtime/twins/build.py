"""Collect, make and fit twins in one call; choose the best fitted twin.

* :func:`build_twin` — ``kind`` in ``nominal | greybox | residual | mlp | best`` for a connected device.
* :func:`fit_best_twin` — fit every candidate kind on one data set (same train / validation / test rows),
  keep the one with the lowest **validation** NMSE and report all of them (test NMSE is reported, never
  used to choose).

Data: θ changes every ``theta_every`` rows (default 16) on a Latin hypercube design, so even the default
data sets hold thousands of distinct θ (see :mod:`pat_runtime.twins.collect`). The residual twin is fitted in
two stages (grey box first, then only the correction on top of the frozen grey box).
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch

from pat_runtime.devices.base import Device

from .base import Twin
from .kinds import make_twin, twin_kinds
from .collect import TwinData, collect
from .fit import TwinReport, fit_twin
from .greybox import sim_options_of
from .mlp import MLPTwin

#: default data, epochs and training-row cap per kind (fast enough for 2 CPU cores; docs/sims.md)
DEFAULTS: dict[str, dict[str, int]] = {
    "nominal": {"n_samples": 1024, "epochs": 0},
    "greybox": {"n_samples": 4096, "epochs": 20},
    "residual": {"n_samples": 32768, "epochs": 40},
    "mlp": {"n_samples": 65536, "epochs": 12},
    "best": {"n_samples": 65536, "epochs": 40},
}
#: rows the grey-box stage is fitted on (its few parameters need little data; the physics is slow)
GREYBOX_ROWS = 4096
#: candidates of a "best" choice, cheapest first
BEST_CANDIDATES: tuple[str, ...] = ("nominal", "greybox", "residual", "mlp")
PHYSICS_KINDS = ("nominal", "greybox", "residual")


def twin_choices() -> list[str]:
    """Everything ``--twin`` / ``--kind`` accepts: the twin kinds and ``best``."""
    return twin_kinds() + ["best"]


def _make(kind: str, device: Device, seed: int, **kw: Any) -> Twin:
    opts = {"sim_options": sim_options_of(device)} if kind in PHYSICS_KINDS else {}
    if kind == "mlp":
        opts = dict(MLPTwin.DATA_DEFAULTS)          # square features for the default data sizes
    with torch.random.fork_rng(devices=[]):          # reproducible initial weights
        torch.manual_seed(seed)
        return make_twin(kind, device.spec, **{**opts, **kw})


def _fit_one(kind: str, device: Device, data: TwinData, seed: int, epochs: int | None,
             fitted_grey: tuple[Twin, TwinReport] | None = None, **fit_kw: Any) -> tuple[Twin, TwinReport]:
    d = DEFAULTS[kind]
    ep = d["epochs"] if epochs is None else epochs
    if kind == "residual":
        t0 = time.perf_counter()
        grey, g_rep = fitted_grey or _fit_one("greybox", device, data, seed, None, **fit_kw)
        twin = _make("residual", device, seed)
        twin.base.load_state_dict(grey.state_dict())
        twin.set_freeze_physics(True)
        rep = fit_twin(twin, data, epochs=ep, seed=seed, **fit_kw)
        rep.seconds = time.perf_counter() - t0
        rep.nmse_before = g_rep.nmse_val
        return twin, rep
    twin = _make(kind, device, seed)
    if kind == "greybox":
        fit_kw = {"max_train": GREYBOX_ROWS, **fit_kw}
    return twin, fit_twin(twin, data, epochs=ep, seed=seed, **fit_kw)


async def _data(device: Device, n: int, seed: int, repeats: int, theta_every: int) -> TwinData:
    return await collect(device, n, repeats=repeats, seed=seed, theta_every=theta_every)


async def build_twin(device: Device, kind: str, n_samples: int | None = None, epochs: int | None = None,
                     seed: int = 0, repeats: int = 2, data: TwinData | None = None, theta_every: int = 16,
                     **fit_kw: Any) -> tuple[Twin, TwinReport, TwinData]:
    """Collect data on ``device`` (unless ``data`` is given), make a ``kind`` twin and fit it.
    ``kind="best"`` fits every candidate and keeps the lowest validation NMSE (:func:`fit_best_twin`)."""
    if kind == "best":
        twin, report, data = await fit_best_twin(device, n_samples=n_samples, epochs=epochs, seed=seed,
                                                 repeats=repeats, data=data, theta_every=theta_every, **fit_kw)
        return twin, report, data
    if kind not in twin_kinds():
        raise ValueError(f"unknown twin kind {kind!r}; known: {', '.join(twin_choices())}")
    d = DEFAULTS.get(kind, DEFAULTS["mlp"])
    if data is None:
        data = await _data(device, int(n_samples or d["n_samples"]), seed, repeats, theta_every)
    twin, report = _fit_one(kind, device, data, seed, epochs, **fit_kw)
    return twin, report, data


async def fit_best_twin(device: Device, kinds: Sequence[str] | None = None, n_samples: int | None = None,
                        epochs: int | None = None, seed: int = 0, repeats: int = 2, data: TwinData | None = None,
                        theta_every: int = 16, **fit_kw: Any) -> tuple[Twin, TwinReport, TwinData]:
    """Fit each candidate twin (default: nominal, greybox, residual, mlp; physics kinds only for simulated
    device kinds) on one data set and return ``(best twin, its report, data)``.

    All candidates share the train / validation / test rows. The winner has the lowest validation NMSE;
    its report's ``kind`` is the winner's kind and ``report.candidates`` holds every candidate's report
    (``nmse_val``, ``nmse_test``, ``noise_floor``, ``seconds``, ...).
    """
    kinds = list(kinds or BEST_CANDIDATES)
    unknown = [k for k in kinds if k not in twin_kinds()]
    if unknown:
        raise ValueError(f"unknown twin kind(s) {unknown}; known: {', '.join(twin_kinds())}")
    usable = []
    for k in kinds:
        if k in PHYSICS_KINDS:
            try:
                _make(k, device, seed)
            except ValueError:
                continue                                  # no datasheet model for this device kind
        usable.append(k)
    if not usable:
        raise ValueError(f"none of the twin kinds {kinds} can model device kind {device.spec.kind!r}")
    if data is None:
        n = int(n_samples or max(DEFAULTS[k]["n_samples"] for k in usable))
        data = await _data(device, n, seed, repeats, theta_every)
    best: tuple[float, Twin, TwinReport] | None = None
    cands: dict[str, dict] = {}
    fitted: dict[str, tuple[Twin, TwinReport]] = {}
    for k in usable:
        twin, rep = _fit_one(k, device, data, seed, epochs,
                             fitted_grey=fitted.get("greybox"), **fit_kw)
        if k == "greybox":
            fitted[k] = (twin, rep)            # the residual copies its state, never changes it
        cands[k] = rep.to_dict()
        cands[k].pop("history", None)
        score = rep.nmse_val if math.isfinite(rep.nmse_val) else math.inf
        if best is None or score < best[0]:
            best = (score, twin, rep)
    assert best is not None
    _, twin, rep = best
    rep.candidates = cands
    return twin, rep, data


__all__ = ["BEST_CANDIDATES", "DEFAULTS", "build_twin", "fit_best_twin", "twin_choices"]
