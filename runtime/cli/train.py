"""``pat train``: train a PNN on a device with PAT, in-silico, SPSA or the digital baseline.

    pat train --device sim:plate --task digits --method pat
    pat train --device zmq://127.0.0.1:5555/node-1 --method pat --twin mlp --out runs/remote

Writes ``metrics.jsonl`` (one line per epoch), ``curves.png``, ``summary.json``, ``model.json`` and the
fitted twin under ``--out`` (see :mod:`runtime.trainers.run`), and prints a summary.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        device: str = typer.Option("sim:plate", help="device URI: sim:KIND[?opts], zmq://HOST:PORT/NODE, mqtt://..."),
        task: str = typer.Option("digits", help="task name (runtime.datasets.TASKS)"),
        method: str = typer.Option("pat", help="pat | insilico | spsa | digital"),
        epochs: int = typer.Option(30, min=1, help="training epochs"),
        batch: int = typer.Option(64, min=1, help="mini-batch size (one θ per device call)"),
        lr: float | None = typer.Option(None, help="Adam learning rate (default 0.05; 0.01 for digital)"),
        twin: str = typer.Option("greybox", help="twin for pat/insilico: nominal | greybox | residual | mlp"),
        twin_path: Path | None = typer.Option(None, help="load a saved twin (pat twin --save) instead"),
        twin_samples: int | None = typer.Option(None, help="measurements collected to fit the twin"),
        layers: int = typer.Option(2, min=1, help="physical layers (the same device reused)"),
        hybrid: bool = typer.Option(False, "--hybrid/--physical", help="digital input/output layers around the device"),
        channels: int | None = typer.Option(None, help="device channels per layer (default ceil(features/in_dim))"),
        seed: int = typer.Option(0, help="random seed (init, data split and order, twin data)"),
        patience: int | None = typer.Option(None, min=1, help="early stop after N epochs without a lower train loss"),
        out: Path | None = typer.Option(None, help="output folder (default runs/DEVICE-TASK-METHOD-sSEED)"),
        threads: int = typer.Option(1, min=1, help="torch CPU threads"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="tqdm progress bar"),
    ) -> None:
        """Train a physical neural network and write metrics, plots and the trained model."""
        import torch

        from devices.errors import DeviceError
        from runtime.trainers.run import METHOD_NAMES, ExperimentConfig, run_experiment
        from runtime.twins import twin_kinds

        if method not in METHOD_NAMES:
            raise typer.BadParameter(f"unknown method {method!r}; choose {', '.join(METHOD_NAMES)}", param_hint="--method")
        if twin not in twin_kinds():
            raise typer.BadParameter(f"unknown twin {twin!r}; choose {', '.join(twin_kinds())}", param_hint="--twin")
        torch.set_num_threads(threads)
        cfg = ExperimentConfig(device=device, task=task, method=method, twin=twin,
                               twin_path=str(twin_path) if twin_path else None, twin_samples=twin_samples,
                               epochs=epochs, batch=batch, lr=lr, layers=layers, hybrid=hybrid, channels=channels,
                               seed=seed, patience=patience)
        if out is None:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in device.split("?")[0])
            out = Path("runs") / f"{safe}-{task}-{method}-s{seed}"
        try:
            result = asyncio.run(run_experiment(cfg, out=out, progress=progress))
        except (DeviceError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        s = result.summary
        if s.get("twin"):
            tw = s["twin"]
            typer.echo(f"twin {tw['kind']}: held-out NMSE {tw['nmse_val']:.4f} (noise floor {tw['noise_floor']:.4f}), "
                       f"used for {tw['used_for']}")
        f = s["final"]
        extra = f", twin-predicted {f['twin_test_acc']:.3f}" if f.get("twin_test_acc") is not None else ""
        typer.echo(f"{method} on {device} / {task}: test accuracy {f['test_acc']:.3f} (physical){extra}; "
                   f"train acc {f['train_acc']:.3f}; {s['epochs_run']} epochs in {s['train_s']:.1f} s "
                   f"({s['samples_per_s']:.0f} samples/s, {s['device_calls']} device calls)")
        typer.echo(f"outputs in {out}/ (metrics.jsonl, curves.png, summary.json, model.json, model.pnn)")
