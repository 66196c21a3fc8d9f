"""Trainers for PNNs on one device: PAT, in-silico, in-situ SPSA and a digital baseline.

``METHODS[name](model, cfg)`` makes a :class:`~pat_runtime.trainers.common.Method`; :func:`train_loop` runs it.
:func:`pat_runtime.trainers.run.run_experiment` does everything ``pat train`` does (device, twin, model, loop,
JSONL/PNG/summary outputs).
"""
from __future__ import annotations

from .common import EpochMetrics, Method, TrainConfig, accuracy, evaluate, predict, seed_everything, train_loop
from .digital import DigitalMethod, build_digital
from .insilico import InSilicoMethod
from .pat import PATMethod
from .spsa import SPSAMethod

METHODS: dict[str, type[Method]] = {
    "pat": PATMethod,
    "insilico": InSilicoMethod,
    "spsa": SPSAMethod,
    "digital": DigitalMethod,
}

__all__ = ["METHODS", "DigitalMethod", "EpochMetrics", "InSilicoMethod", "Method", "PATMethod", "SPSAMethod",
           "TrainConfig", "accuracy", "build_digital", "evaluate", "predict", "seed_everything", "train_loop"]
