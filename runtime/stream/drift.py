"""The drift experiment: does online PAT with twin refresh keep accuracy while the hardware drifts?

Setup (all runs share it, same seeds)::

    device     sim (default plate), unit u, noise n; hidden parameters drift as a log random walk of
               `drift` per device call (pat_runtime.sims.base.Simulator), switched on only after pretraining
    pretrain   grey-box twin fitted on the undrifted device, then `pretrain_epochs` of PAT on the task
    stream     `steps` labelled mini-batches cycling the task's training set (task_stream, same order)
    eval       held-out accuracy on `n_test` test samples every `eval_every` steps, on the device

Three runs from the same pretrained state, each on a fresh device whose drift trajectory is identical
(same unit and seed, and every run makes the same device calls in the same order)::

    online        online PAT, twin refreshed from the replay buffer (periodic + drift detection)
    frozen_model  the pretrained model only serves (no updates)
    frozen_twin   online PAT, but the twin stays the pretrained one

``python -m pat_runtime.stream.drift --out docs/drift.png`` runs it and writes the plot and a JSON summary.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .refresh import RefreshConfig
from .sources import IteratorSource, task_stream
from .trainer import StreamConfig, StreamTrainer

MODES = ("online", "frozen_model", "frozen_twin")
LABELS = {"online": "online PAT + twin refresh", "frozen_model": "frozen model",
          "frozen_twin": "online PAT, frozen twin"}


@dataclass
class DriftExperiment:
    sim: str = "plate"
    unit: int = 0
    seed: int = 0
    noise: float = 0.01
    drift: float = 0.0015
    drift_revert: float = 0.0
    task: str = "digits"
    n_test: int = 300
    twin: str = "greybox"
    twin_samples: int = 2048
    twin_epochs: int = 15
    layers: int = 1
    pretrain_epochs: int = 10
    batch: int = 32
    lr: float = 0.02
    stream_lr: float = 0.01
    steps: int = 600
    eval_every: int = 25
    refresh: RefreshConfig = field(default_factory=lambda: RefreshConfig(every=100, window=2048, epochs=8,
                                                                                min_gap=50))

    def sim_kwargs(self, drift: float = 0.0) -> dict[str, Any]:
        return dict(unit=self.unit, seed=self.seed, noise=self.noise, drift=drift, drift_revert=self.drift_revert)


async def _device(exp: DriftExperiment):
    from pat_runtime.devices.local import LocalDevice
    from pat_runtime.sims import make_sim

    dev = LocalDevice(make_sim(exp.sim, **exp.sim_kwargs()), threaded=False)
    await dev.connect()
    return dev


async def pretrain(exp: DriftExperiment) -> dict[str, Any]:
    """Twin fit + offline PAT on an undrifted device; returns states to start every run from."""
    from pat_runtime.datasets import load_task
    from pat_runtime.pat import build_pnn
    from pat_runtime.trainers import PATMethod, TrainConfig, evaluate, train_loop
    from pat_runtime.twins import build_twin

    t0 = time.perf_counter()
    task = load_task(exp.task, seed=exp.seed)
    dev = await _device(exp)
    twin, report, _ = await build_twin(dev, exp.twin, n_samples=exp.twin_samples, epochs=exp.twin_epochs,
                                       seed=exp.seed)
    pnn = build_pnn(task.n_features, task.n_classes, twin, device=dev, layers=exp.layers, seed=exp.seed)
    pnn.calibrate(torch.from_numpy(task.x_train[:512]))
    cfg = TrainConfig(epochs=exp.pretrain_epochs, batch=exp.batch, lr=exp.lr, seed=exp.seed)
    hist = await train_loop(PATMethod(pnn, cfg), task, cfg, device=dev)
    xte, yte = torch.from_numpy(task.x_test[:exp.n_test]), torch.from_numpy(task.y_test[:exp.n_test])
    _, acc = await evaluate(pnn, xte, yte, physical=True)
    return {"model": copy.deepcopy(pnn.state_dict()), "twin": copy.deepcopy(twin.state_dict()),
            "config": dict(pnn.config), "twin_nmse": report.nmse_val, "acc": acc,
            "epochs": [h.test_acc for h in hist], "seconds": time.perf_counter() - t0}


async def run_mode(exp: DriftExperiment, mode: str, pre: dict[str, Any],
                   checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """One streaming run under drift from the pretrained state."""
    from pat_runtime.datasets import load_task
    from pat_runtime.pat import build_pnn
    from pat_runtime.twins import make_twin, sim_options_of

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    t0 = time.perf_counter()
    task = load_task(exp.task, seed=exp.seed)
    dev = await _device(exp)
    dev.sim.drift, dev.sim.drift_revert = exp.drift, exp.drift_revert
    twin = make_twin(exp.twin, dev.spec, **({"sim_options": sim_options_of(dev)} if exp.twin != "mlp" else {}))
    twin.load_state_dict(pre["twin"])
    pnn = build_pnn(spec=dev.spec, device=dev, twin=twin, **pre["config"])
    pnn.load_state_dict(pre["model"])
    cfg = StreamConfig(lr=exp.stream_lr, update_model=mode != "frozen_model",
                       refresh=exp.refresh if mode == "online" else RefreshConfig.frozen(),
                       eval_every=exp.eval_every, checkpoint_every=10 ** 9)
    src = IteratorSource(task_stream(task.x_train, task.y_train, exp.batch, seed=exp.seed, limit=exp.steps))
    trainer = StreamTrainer(pnn, twin, src, checkpoint_dir=checkpoint_dir, config=cfg,
                            eval_data=(task.x_test[:exp.n_test], task.y_test[:exp.n_test]), seed=exp.seed)
    summary = await trainer.run(resume=False)
    trainer.close()
    p_drift = {k: float((torch.log(v.abs()) - torch.log(dev.sim.p_unit[k].abs())).abs().mean())
               for k, v in dev.sim.hidden_params.items() if k not in dev.sim.fixed_params}
    return {"mode": mode, "evals": [(e["step"], e["acc"]) for e in trainer.evals],
            "prequential": [r["acc"] for r in trainer.history], "summary": summary,
            "twin_err": [(r["step"], r["twin_err"]) for r in trainer.history if r["twin_err"] is not None],
            "refits": [r["refit"] for r in trainer.history if "refit" in r],
            "device_calls": dev.calls, "mean_abs_log_drift": p_drift, "seconds": time.perf_counter() - t0}


async def run_experiment(exp: DriftExperiment, modes=MODES) -> dict[str, Any]:
    pre = await pretrain(exp)
    runs = {m: await run_mode(exp, m, pre) for m in modes}
    return {"setup": _plain(asdict(exp)), "pretrain": {k: pre[k] for k in ("acc", "twin_nmse", "epochs", "seconds")},
            "runs": runs}


def end_accuracy(evals: list[tuple[int, float]], k: int = 5) -> float:
    """Mean held-out accuracy over the last ``k`` evaluations (the start is ``evals[0]``, before drift)."""
    return float(np.mean([a for _, a in evals][-k:]))


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Held-out accuracy over the stream (left) and the twin's error on fresh measurements (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    s = result["setup"]
    batch = s["batch"]
    for m, run in result["runs"].items():
        steps, accs = zip(*run["evals"])
        ax.plot(np.array(steps) * batch, accs, marker="o", ms=3, label=LABELS.get(m, m))
        if m != "frozen_model" and run.get("twin_err"):
            st, err = zip(*run["twin_err"])
            bx.semilogy(np.array(st) * batch, err, label=LABELS.get(m, m), color=ax.lines[-1].get_color())
    ax.set_xlabel("stream samples (device drifting)")
    ax.set_ylabel("held-out accuracy (on the device)")
    ax.set_title(f"sim:{s['sim']}, drift {s['drift']}/call, task {s['task']}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    bx.set_xlabel("stream samples")
    bx.set_ylabel("twin NMSE on fresh measurements (EMA)")
    bx.set_title("twin error: refreshed vs frozen")
    bx.grid(alpha=0.3, which="both")
    bx.legend(loc="upper left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/drift.png")
    ap.add_argument("--json", default=None, help="summary JSON (default: OUT with .json)")
    ap.add_argument("--steps", type=int, default=DriftExperiment.steps)
    ap.add_argument("--drift", type=float, default=DriftExperiment.drift)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    exp = DriftExperiment(steps=args.steps, drift=args.drift, seed=args.seed)
    res = asyncio.run(run_experiment(exp))
    plot(res, args.out)
    out_json = Path(args.json or Path(args.out).with_suffix(".json"))
    slim = {**res, "runs": {m: {k: v for k, v in r.items() if k not in ("prequential", "twin_err")}
                            for m, r in res["runs"].items()}}
    out_json.write_text(json.dumps(slim, indent=1))
    print(f"pretrained acc {res['pretrain']['acc']:.3f} (twin NMSE {res['pretrain']['twin_nmse']:.3g})")
    for m, r in res["runs"].items():
        a0, a1 = r["evals"][0][1], end_accuracy(r["evals"])
        err = [e for _, e in r["twin_err"]]
        te = f"twin NMSE end {np.mean(err[-50:]):.3g}" if err else ""
        print(f"{LABELS[m]:28s} start {a0:.3f} end(last 5 evals) {a1:.3f}  refits {len(r['refits'])}  {te}  "
              f"{r['seconds']:.0f}s")


if __name__ == "__main__":
    main()
