"""One training run end to end (what ``pat train`` does): device, twin, model, loop, outputs.

``await run_experiment(ExperimentConfig(device="sim:plate", task="digits", method="pat"))`` connects the
device (:func:`pat_runtime.devices.factory.make_device`), builds the twin (``nominal`` = datasheet physics, or a
``greybox``/``residual``/``mlp`` twin fitted to fresh measurements, or one loaded from ``twin_path``),
builds the PNN (:func:`pat_runtime.pat.build_pnn`) or the digital baseline, trains with the chosen method and,
with ``out`` set, writes the files below. The default twin is ``greybox`` everywhere (``pat train`` and
:class:`ExperimentConfig` agree).

Data: train / validation / test. ``val_fraction`` of the training split is held out as validation
(stratified, per seed); the model of the epoch with the best *validation* accuracy is the result, early
stopping (``patience``) watches validation too, and the reported ``test_acc`` is the test accuracy of
that selected model: the test split never decides anything. A run whose selected model ends within
5 points of chance gets a warning in ``summary["warnings"]`` (and on the console).

Outputs::

    out/metrics.jsonl   one JSON object per epoch (EpochMetrics)
    out/curves.png      loss / accuracy curves
    out/summary.json    config, twin report, final metrics, timings
    out/model.json      the trained PNN (PNN.to_artifact_dict) or digital state
    out/model.pnn       the trained PNN as a deployable artifact (``pat deploy``; PNNs only)
    out/twin.pt         the twin used (pat_runtime.twins.save_twin), for fitted twins
    out/checkpoint.pt   rewritten after every epoch (pat_runtime.trainers.checkpoint); ``resume=out`` continues
    out/tb/             TensorBoard scalars per epoch (pat_runtime.loggers), when tensorboard is installed

Twin held-out NMSE is always measured on fresh device data, also for the unfitted nominal twin, so
every result states how good the model behind it was.
"""
from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pat_runtime.devices.base import Device
from pat_runtime import defaults as D
from pat_runtime.devices.factory import make_device
from pat_runtime.devices.local import LocalDevice
from pat_runtime.datasets import Task, load_task, with_validation
from pat_runtime.pat import PNN, build_pnn
from pat_runtime.redact import redact_uri
from pat_runtime.twins import (Twin, TwinReport, build_twin, collect, evaluate_twin, load_twin, twin_from_dict,
                           twin_to_dict)

from . import checkpoint as ckpt
from .common import EpochMetrics, History, TrainConfig, chance_level, seed_everything, train_loop
from .digital import build_digital

METHOD_NAMES = ("pat", "insilico", "spsa", "digital")
#: training rows that calibrate the PNN's rescalings before training
CALIBRATION_ROWS = 512


@dataclass
class ExperimentConfig:
    device: str = "sim:plate"
    task: str = "digits"
    method: str = "pat"
    twin: str = "greybox"
    twin_path: str | None = None
    twin_samples: int | None = None
    twin_epochs: int | None = None
    epochs: int = 30
    batch: int = 64
    lr: float | None = None
    layers: int = 2
    hybrid: bool = False
    channels: int | None = None
    seed: int = 0
    patience: int | None = None
    max_steps: int | None = None
    spsa_c: float = D.SPSA_C
    spsa_samples: int = D.SPSA_SAMPLES
    spsa_a: float = D.SPSA_A
    spsa_A: float | None = None
    #: fraction of the training split held out for validation (all selection reads it)
    val_fraction: float = D.VAL_FRACTION
    #: "val": the result is the model of the best-validation epoch; "last": the final epoch
    select: str = "val"
    #: "epoch": log test metrics every epoch (curves); "final": read the test split once, at the end
    eval_test: str = "epoch"
    #: seconds to wait for the device (a remote node to join, instruments to answer) before giving up
    join_timeout: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        """The config as recorded (summary.json): secrets in the device URI are redacted."""
        return {**asdict(self), "device": redact_uri(self.device)}

    def default_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        from pat_runtime.defaults import default_lr

        return default_lr(self.method, self.hybrid)

    def command(self) -> str:
        """The ``pat train`` command line that reproduces this run (shell-quoted: paste it as is)."""
        parts = ["pat", "train", "--device", redact_uri(self.device), "--task", self.task, "--method", self.method,
                 "--epochs", str(self.epochs), "--batch", str(self.batch), "--layers", str(self.layers),
                 "--seed", str(self.seed)]
        if self.method != "digital":
            parts += ["--twin", self.twin]
        if self.hybrid:
            parts.append("--hybrid")
        if self.lr is not None:
            parts += ["--lr", str(self.lr)]
        if self.channels:
            parts += ["--channels", str(self.channels)]
        if self.patience:
            parts += ["--patience", str(self.patience)]
        if self.twin_path:
            parts += ["--twin-path", self.twin_path]
        elif self.twin_samples and self.method != "digital":
            parts += ["--twin-samples", str(self.twin_samples)]
        if self.val_fraction != D.VAL_FRACTION:
            parts += ["--val-fraction", str(self.val_fraction)]
        if self.method == "spsa":
            parts += ["--spsa-a", f"{self.spsa_a:g}", "--spsa-c", f"{self.spsa_c:g}",
                      "--spsa-samples", str(self.spsa_samples)]
        return shlex.join(parts)


@dataclass
class RunResult:
    config: ExperimentConfig
    history: list[EpochMetrics]
    summary: dict[str, Any]
    model: torch.nn.Module
    twin: Twin | None = None
    twin_report: TwinReport | None = None
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def prepare_twin(device: Device, cfg: ExperimentConfig) -> tuple[Twin, TwinReport]:
    """The twin ``cfg`` asks for, with a held-out report measured on this device."""
    if cfg.twin_path:
        twin = load_twin(cfg.twin_path)
        data = await collect(device, cfg.twin_samples or 1024, repeats=2, seed=cfg.seed + 1)
        return twin, evaluate_twin(twin, data)
    twin, report, _ = await build_twin(device, cfg.twin, n_samples=cfg.twin_samples, epochs=cfg.twin_epochs,
                                       seed=cfg.seed)
    return twin, report


async def run_experiment(cfg: ExperimentConfig, task: Task | None = None, device: Device | None = None,
                         out: str | Path | None = None, progress: bool = False, resume: str | Path | None = None,
                         checkpoint: bool = True, loggers: list | None = None,
                         on_device: Any = None, twin: Twin | None = None,
                         twin_report: TwinReport | None = None) -> RunResult:
    """Train once as described by ``cfg``; ``device`` overrides ``cfg.device`` (it is connected if needed,
    and closed at the end only if this function opened it). ``twin`` (with its ``twin_report``) reuses a
    twin already fitted to this device instead of building ``cfg.twin`` (e.g. one best twin shared by
    several runs); it is not modified.

    With ``out``, ``checkpoint.pt`` is rewritten after every epoch; ``resume`` (a run folder or checkpoint
    file) continues such a run from its last finished epoch (refused, with the reason, when the checkpoint
    was made for another device, task, method or model shape). The checkpoint also holds the model of the
    best-validation epoch so far, so the resumed run selects among all its epochs. ``loggers`` get every
    epoch's metrics (:mod:`pat_runtime.loggers`); ``on_device(device)`` is called once the device is made
    (e.g. metrics).
    """
    if cfg.method not in METHOD_NAMES:
        raise ValueError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHOD_NAMES)}")
    from . import METHODS

    state = ckpt.load_checkpoint(resume) if resume is not None else None
    if state is not None:
        ckpt.check_compatible(state, cfg.to_dict(), None, where=str(resume))

    seed_everything(cfg.seed)
    task = with_validation(task or load_task(cfg.task, seed=cfg.seed), cfg.val_fraction, seed=cfg.seed)
    own_device = device is None and cfg.method != "digital"
    if own_device:
        device = make_device(cfg.device)
    if device is not None and on_device is not None:
        on_device(device)
    t0 = time.perf_counter()
    given_twin, report = twin, twin_report
    twin = None
    loggers = list(loggers or [])
    try:
        if device is not None and not device.connected:
            await device.connect(timeout=cfg.join_timeout)
        if state is not None and device is not None:
            ckpt.check_compatible(state, cfg.to_dict(), device.spec.to_dict(), where=str(resume))
        steps = math.ceil(task.n_train / cfg.batch)
        if cfg.max_steps:
            steps = min(steps, cfg.max_steps)
        tcfg = TrainConfig(epochs=cfg.epochs, batch=cfg.batch, lr=cfg.default_lr(), seed=cfg.seed,
                           patience=cfg.patience, max_steps=cfg.max_steps, spsa_c=cfg.spsa_c,
                           spsa_samples=cfg.spsa_samples, spsa_a=cfg.spsa_a,
                           spsa_A=cfg.spsa_A if cfg.spsa_A is not None else 0.1 * steps * cfg.epochs,
                           select=cfg.select, eval_test=cfg.eval_test)
        if cfg.method == "digital":
            spec = device.spec if device is not None else None
            width = _digital_width(task.n_features, spec, cfg.channels)
            model: torch.nn.Module = build_digital(task.n_features, task.n_classes, width, cfg.layers, cfg.seed)
            n_params = {"digital": sum(p.numel() for p in model.parameters()), "physical": 0}
            n_params["total"] = n_params["digital"]
            train_device = None
        else:
            calls0 = device.calls
            if state is not None and state.get("twin") is not None:   # the run's own twin, not a new fit
                twin = twin_from_dict(state["twin"]["twin"])
                rep_d = state["twin"].get("report")
                report = TwinReport(**rep_d) if rep_d else None
            elif given_twin is not None:
                twin = given_twin
            else:
                twin, report = await prepare_twin(device, cfg)
            twin_calls = device.calls - calls0
            twin.requires_grad_(False)
            twin.eval()
            model = build_pnn(task.n_features, task.n_classes, twin, device, layers=cfg.layers, hybrid=cfg.hybrid,
                              channels=cfg.channels, seed=cfg.seed, init_frac=D.THETA_INIT_FRAC)
            # a local simulator draws its noise in call order: measure sequentially so runs are reproducible
            model.set_concurrent(not isinstance(device, LocalDevice))
            if state is None and cfg.method in ("pat", "spsa"):
                # methods whose forward pass is the device calibrate their rescalings on measured outputs
                await model.acalibrate(torch.from_numpy(task.x_train[:CALIBRATION_ROWS]), D.DRIVE_SPREAD)
            else:
                model.calibrate(torch.from_numpy(task.x_train[:CALIBRATION_ROWS]), D.DRIVE_SPREAD)
            n_params = model.n_parameters()
            train_device = device
        t_setup = time.perf_counter() - t0
        method = METHODS[cfg.method](model, tcfg)
        done = History()
        if state is not None:
            ckpt.restore(state, model, method)
            done = History(EpochMetrics(**h) for h in state["history"])
            done.best_state = state.get("best_model")
        out_dir = Path(out) if out is not None else None
        jsonl = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            jsonl = (out_dir / "metrics.jsonl").open("a" if state is not None else "w")
        twin_state = None if twin is None else {
            "twin": twin_to_dict(twin),
            "report": None if report is None else report.to_dict()}
        history_rows = [m.to_dict() for m in done]

        def on_epoch(m: EpochMetrics) -> None:
            row = {"method": cfg.method, **m.to_dict()}
            if jsonl is not None:
                jsonl.write(json.dumps(row) + "\n")
                jsonl.flush()
            history_rows.append(m.to_dict())
            if out_dir is not None and checkpoint:
                ckpt.save_checkpoint(out_dir, config=cfg.to_dict(),
                                     spec=device.spec.to_dict() if device is not None else None,
                                     epoch=m.epoch, model=model, method=method, history=history_rows,
                                     twin=twin_state, best_model=done.best_state)
            for lg in loggers:
                lg.log_epoch(row)

        try:
            history = await train_loop(
                method, task, tcfg, train_device, on_epoch=on_epoch, progress=progress,
                desc=f"{cfg.method} {cfg.device if cfg.method != 'digital' else ''}".strip(),
                start_epoch=len(done) + 1, history=done)
        finally:
            if jsonl is not None:
                jsonl.close()
            for lg in loggers:
                lg.close()
        summary = _summary(cfg, task, history, report, n_params, t_setup, time.perf_counter() - t0,
                           twin_calls if cfg.method != "digital" else 0, device)
        result = RunResult(cfg, history, summary, model, twin, report, out_dir)
        if out_dir is not None:
            write_outputs(result)
        return result
    finally:
        if own_device and device is not None:
            await device.close()


def _digital_width(n_features: int, spec, channels: int | None) -> int:
    """Hidden width of the digital baseline: the PNN's physical width ``C·in_dim`` (or 64 without a device)."""
    if spec is None:
        return 64
    import math

    C = channels or max(1, math.ceil(n_features / spec.in_dim))
    return C * spec.in_dim


def near_chance_warning(cfg: ExperimentConfig, task: Task, final: dict[str, Any]) -> str | None:
    """A warning when the selected model's validation (or test) accuracy is within 5 points of chance."""
    chance = chance_level(task.y_test)
    acc = final.get("val_acc") if final.get("val_acc") is not None else final.get("test_acc")
    if acc is None or acc > chance + 0.05:
        return None
    hint = {"spsa": " SPSA's gradient estimate is too noisy for this budget: raise --epochs or --spsa-samples, "
                    "tune the gains (--spsa-tune), or use --method pat.",
            "insilico": " The twin may be far from the device: try --twin greybox/residual or --method pat."
            }.get(cfg.method, " Check the learning rate, the epochs and the device.")
    return (f"{cfg.method} on {cfg.device} / {cfg.task} ended near chance: accuracy {100 * acc:.1f} % vs chance "
            f"{100 * chance:.1f} %.{hint}")


def _summary(cfg, task, history, report, n_params, t_setup, t_total, twin_calls, device) -> dict[str, Any]:
    last = history[-1] if history else None
    final = getattr(history, "final", {}) or {}
    train_s = sum(m.seconds for m in history)
    warn = near_chance_warning(cfg, task, final) if history else None
    return {
        "command": cfg.command(),
        "config": cfg.to_dict(),
        "device": None if cfg.method == "digital" else {"name": redact_uri(getattr(device, "name", cfg.device)),
                                                        "spec": device.spec.to_dict()},
        "task": {"name": task.name, "n_train": task.n_train, "n_val": task.n_val, "n_test": task.n_test,
                 "n_features": task.n_features, "n_classes": task.n_classes},
        "twin": None if report is None else {**report.to_dict(),
                                             "kind": cfg.twin if not cfg.twin_path else f"file:{cfg.twin_path}",
                                             "used_for": {"pat": "backward pass (PAT)",
                                                          "insilico": "forward and backward (training)",
                                                          "spsa": "nothing in training (twin accuracy only)"
                                                          }[cfg.method],
                                             "measurement_calls": twin_calls},
        "parameters": n_params,
        "epochs_run": len(history),
        "final": None if last is None else last.to_dict(),
        # the result: the model selected on validation (``selected``), its test accuracy read afterwards
        "selected": final or None,
        "best_epoch": final.get("epoch"),
        "val_acc": final.get("val_acc"),
        "test_acc": final.get("test_acc"),
        "twin_test_acc": final.get("twin_test_acc"),
        "chance": chance_level(task.y_test),
        "warnings": [warn] if warn else [],
        "setup_s": t_setup,
        "train_s": train_s,
        "total_s": t_total,
        "samples_per_s": (task.n_train * len(history) / train_s) if train_s > 0 and not cfg.max_steps else
        (sum(m.samples_per_s for m in history) / max(len(history), 1)),
        "device_calls": None if last is None else last.device_calls,
    }


def write_outputs(result: RunResult) -> None:
    """summary.json, model.json, twin.pt and curves.png into ``result.out`` (metrics.jsonl is streamed)."""
    from pat_runtime.plots import plot_curves
    from pat_runtime.twins import save_twin

    out = result.out
    assert out is not None
    hist = result.summary.get("twin", {}) or {}
    summary = dict(result.summary)
    if hist.get("history"):
        summary["twin"] = {**hist, "history": [round(h, 6) for h in hist["history"]]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    if isinstance(result.model, PNN):
        (out / "model.json").write_text(json.dumps(result.model.to_artifact_dict()) + "\n")
        from pat_runtime.artifact import pnn_to_artifact, save_artifact

        cfg = result.config
        meta = {"task": cfg.task, "method": cfg.method, "twin": cfg.twin, "device": redact_uri(cfg.device),
                "seed": cfg.seed, "test_acc": result.summary.get("test_acc")}
        save_artifact(out / "model.pnn", pnn_to_artifact(result.model, model_version=out.name, metadata=meta))
    else:
        state = {k: v.tolist() for k, v in result.model.state_dict().items()}
        (out / "model.json").write_text(json.dumps({"format": "digital-mlp/1", "state_dict": state}) + "\n")
    if result.twin is not None and result.config.twin != "nominal":
        save_twin(result.twin, out / "twin.pt")
    cfg = result.config
    plot_curves([m.to_dict() for m in result.history], out / "curves.png",
                title=f"{cfg.method} on {redact_uri(cfg.device)} / {cfg.task}"
                      + (f" (twin: {cfg.twin})" if cfg.method != "digital" else ""))
