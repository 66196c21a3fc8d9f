"""One set of defaults: every entry point takes layers and learning rate from pat_runtime.defaults."""
from __future__ import annotations

import inspect

import typer

from pat_runtime import api
from pat_runtime import defaults as D
from pat_runtime.cli import app
from pat_runtime.fleet.experiment import FleetConfig
from pat_runtime.trainers.run import ExperimentConfig


def _param(command: str, name: str):
    cmd = typer.main.get_command(app).get_command(None, command)
    return next(p for p in cmd.params if p.name == name).default


def test_layers_default_is_the_same_everywhere():
    assert _param("train", "layers") == _param("fleet", "layers") == _param("stream", "layers") == D.LAYERS
    assert _param("train-fleet", "layers") == D.LAYERS
    assert inspect.signature(api.train).parameters["layers"].default == D.LAYERS
    assert FleetConfig().layers == D.LAYERS


def test_learning_rate_follows_one_rule():
    # train and fleet leave --lr unset and ask default_lr (physical-only vs hybrid nets, digital baseline)
    assert _param("train", "lr") is None and _param("fleet", "lr") is None
    assert ExperimentConfig(device="sim:plate", method="pat").default_lr() == D.LR
    assert ExperimentConfig(device="sim:plate", method="pat", hybrid=True).default_lr() == D.LR_HYBRID
    assert ExperimentConfig(device="sim:plate", method="digital").default_lr() == D.LR_DIGITAL
    assert FleetConfig().lr == D.LR_HYBRID and FleetConfig(hybrid=False).lr == D.LR
    assert FleetConfig(lr=0.1).lr == 0.1
    # every other learning rate is named in runtime.defaults with the measurement behind it
    assert _param("train-fleet", "lr") == D.LR_MULTI_UNIT and _param("train-fleet", "cal_lr") == D.LR_CALIBRATION
    # a stream updates an already trained model: small online steps
    assert _param("stream", "lr") == D.LR_ONLINE
