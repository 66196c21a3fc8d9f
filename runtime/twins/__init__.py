"""Digital twins ``f_m(x, θ) ≈ f_p(x, θ)`` of physical devices.

* :func:`collect` — measure random ``(x, θ)`` (θ shared per batch, repeats for the noise floor).
* :class:`MLPTwin` (black box), :class:`GreyBoxTwin` (nominal physics + learnable calibration),
  :class:`ResidualTwin` (grey box + MLP correction), :class:`NominalTwin` (datasheet physics, unfitted).
* :func:`fit_twin` -> :class:`TwinReport` (held-out NMSE, noise floor); :func:`save_twin` / :func:`load_twin`.
* :func:`build_twin` — collect, make and fit in one call for a connected device (``kind="best"`` too).
* :func:`fit_best_twin` — fit nominal / grey-box / residual / MLP on one data set, keep the lowest
  validation NMSE, report all (test NMSE reported, never used to choose).
"""
from __future__ import annotations

from .build import BEST_CANDIDATES, DEFAULTS, build_twin, fit_best_twin, twin_choices
from .base import TWIN_FORMAT, Twin
from .collect import TwinData, collect
from .fit import TwinReport, evaluate_twin, fit_twin, nmse, split3
from .greybox import GreyBoxTwin, NominalTwin, nominal_sim, sim_options_of
from .kinds import load_twin, make_twin, save_twin, twin_from_dict, twin_kinds, twin_to_dict
from .mlp import MLPTwin
from .residual import ResidualTwin

__all__ = ["BEST_CANDIDATES", "DEFAULTS", "fit_best_twin", "split3", "twin_choices", "GreyBoxTwin", "MLPTwin", "NominalTwin", "ResidualTwin", "TWIN_FORMAT", "Twin", "TwinData",
           "TwinReport", "build_twin", "collect", "evaluate_twin", "fit_twin", "load_twin", "make_twin", "nmse", "nominal_sim",
           "save_twin", "sim_options_of", "twin_from_dict", "twin_kinds", "twin_to_dict"]
