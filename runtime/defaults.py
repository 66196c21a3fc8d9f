"""One set of defaults for every entry point (``pat train``, ``pat fleet``, ``pat stream``, the Python API).

Change a value here and every command and :mod:`pat_runtime.api` follows. The twin default is owned by the
training/statistics work (``runtime/trainers``); it is repeated here for the commands' option defaults.
"""
from __future__ import annotations

#: physical layers of a fresh PNN (the same device reused per layer)
LAYERS = 2
#: Adam learning rate when training a physical-only PNN from scratch with ``pat train`` (PAT, in-silico, SPSA)
LR = 0.1
#: ``pat train`` PNN init: θ uniform in the central THETA_INIT_FRAC of its range, and every rescaling's
#: pre-sigmoid drive calibrated to std DRIVE_SPREAD (1.5 keeps the plate's speaker and the SHG phase mostly in
#: their sensitive range; measured on digits, 4 layers, 120 steps: plate 0.68 -> 0.86 val, shg 0.67 -> ~0.75)
THETA_INIT_FRAC = 0.9
DRIVE_SPREAD = 1.5
#: Adam learning rate for hybrid PNNs (digital input/output layers around the device), e.g. every ``pat fleet``
#: model: with digital layers in the loop 0.05 overshoots (16-node fleet, 2 layers, 4 epochs: 67 % at 0.05,
#: 92 % at 0.02)
LR_HYBRID = 0.02
#: ``pat train-fleet`` (multi-unit PAT, one model for several units; docs/deploy.md was measured with it)
LR_MULTI_UNIT = 0.05
#: Adam learning rate a node uses to calibrate a deployed model on its own unit (docs/deploy.md: 0.02
#: overshoots on sim:plate)
LR_CALIBRATION = 0.005
#: Adam learning rate of the digital baseline
LR_DIGITAL = 0.01
#: Adam learning rate for online updates of an already trained PNN on a live stream (small steps)
LR_ONLINE = 0.01
#: twin used by PAT / in-silico training
TWIN = "greybox"
#: epochs and mini-batch of ``pat train``
EPOCHS = 30
BATCH = 64
#: share of the training split held out for validation (selection and early stopping read it)
VAL_FRACTION = 0.2
#: SPSA (Spall) gains: a_k = SPSA_A / (k + 1 + A)^0.602, c_k = SPSA_C / (k + 1)^0.101, SPSA_SAMPLES
#: perturbations averaged per step (pat_runtime.trainers.spsa)
SPSA_A = 1.0
SPSA_C = 0.2
SPSA_SAMPLES = 4
#: seconds to wait for a device: a remote node to join, instruments to answer
JOIN_TIMEOUT = 10.0


def default_lr(method: str, hybrid: bool = False) -> float:
    """The learning rate ``method`` uses when none is given (every entry point asks here)."""
    if method == "digital":
        return LR_DIGITAL
    return LR_HYBRID if hybrid else LR
