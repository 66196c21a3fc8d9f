"""``pat train``: train a PNN on a device with PAT, in-silico, SPSA or the digital baseline.

    pat train --device sim:plate --task digits --method pat
    pat train --device zmq://127.0.0.1:5555/node-1 --method pat --twin mlp --out runs/remote
    pat train --config run.toml --epochs 5           # options from a file, flags win
    pat train --resume runs/<run>                    # continue after Ctrl-C (or with more --epochs)

Writes ``metrics.jsonl`` (one line per epoch), ``tb/`` (TensorBoard), ``checkpoint.pt`` (every epoch),
``config.toml`` (the resolved options), ``curves.png``, ``summary.json``, ``model.json``, ``model.pnn`` and
the fitted twin under ``--out`` (default: a new folder under runs/; see :mod:`pat_runtime.trainers.run`).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from pat_runtime import defaults as D


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        ctx: typer.Context,
        device: str = typer.Option("sim:plate", help="device URI: sim:KIND[?opts], zmq://HOST:PORT/NODE, mqtt://..., "
                                                     "visa:plate?awg=...&dig=... or an installed scheme"),
        task: str = typer.Option("digits", help="task name (pat_runtime.datasets.TASKS)"),
        method: str = typer.Option("pat", help="pat | insilico | spsa | digital"),
        epochs: int = typer.Option(D.EPOCHS, min=1, help="training epochs"),
        batch: int = typer.Option(D.BATCH, min=1, help="mini-batch size (one θ per device call)"),
        lr: float | None = typer.Option(None, min=0.0, help=f"Adam learning rate (default {D.LR}; {D.LR_HYBRID} "
                                                             f"with --hybrid; {D.LR_DIGITAL} for digital)"),
        twin: str = typer.Option(D.TWIN, help="twin for pat/insilico: nominal | greybox | residual | mlp | best"),
        twin_path: Path | None = typer.Option(None, help="load a saved twin (pat twin --save) instead"),
        twin_samples: int | None = typer.Option(None, min=1, help="measurements collected to fit the twin"),
        layers: int = typer.Option(D.LAYERS, min=1, help="physical layers (the same device reused)"),
        hybrid: bool = typer.Option(False, "--hybrid/--physical", help="digital input/output layers around the device"),
        channels: int | None = typer.Option(None, min=1, help="device channels per layer (default ceil(features/in_dim))"),
        seed: int = typer.Option(0, min=0, help="random seed (init, data split and order, twin data)"),
        patience: int | None = typer.Option(None, min=1, help="early stop after N epochs without a better validation "
                                                              "accuracy (train loss with --val-fraction 0)"),
        val_fraction: float = typer.Option(D.VAL_FRACTION, min=0.0, max=0.9,
                                           help="share of the training split held out for validation (best epoch, "
                                                "early stopping and tuning read it; 0 = none)"),
        spsa_a: float = typer.Option(D.SPSA_A, min=0.0, help="SPSA step gain a (a_k = a/(k+1+A)^0.602)"),
        spsa_c: float = typer.Option(D.SPSA_C, min=0.0, help="SPSA perturbation gain c (c_k = c/(k+1)^0.101)"),
        spsa_samples: int = typer.Option(D.SPSA_SAMPLES, min=1, help="SPSA perturbations averaged per step"),
        spsa_tune: bool = typer.Option(False, "--spsa-tune/--no-spsa-tune",
                                       help="SPSA: pick a and c on the validation split first (short runs; the "
                                            "tuned gains go to config.toml, a resumed run reuses them)"),
        out: Path | None = typer.Option(None, help="output folder (default: a new runs/DEVICE-TASK-METHOD-sSEED-TIME)"),
        threads: int = typer.Option(1, min=1, help="torch CPU threads"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="tqdm progress bar"),
        join_timeout: float = typer.Option(D.JOIN_TIMEOUT, min=0.0, help="seconds to wait for the device (a remote "
                                                                          "node to join, instruments to answer)"),
        tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="TensorBoard events in OUT/tb"),
        metrics_port: int | None = typer.Option(None, min=0, max=65535, help="serve Prometheus /metrics on this "
                                                                            "port (127.0.0.1)"),
        config: Path | None = typer.Option(None, "--config", help="read options from this TOML file (flags win)"),
        resume: Path | None = typer.Option(None, "--resume", help="continue the run in this folder from its "
                                                                  "last checkpoint (its options are the defaults)"),
        sign_key: Path | None = typer.Option(None, "--sign-key", help="sign model.pnn with this private key "
                                             "(default: $PAT_HOME/signing.key when it exists)"),
    ) -> None:
        """Train a physical neural network and write metrics, plots and the trained model."""
        from pat_runtime.config import ConfigError, config_values, read_toml, resolve, write_toml

        values = {k: v for k, v in locals().items() if k in {p.name for p in ctx.command.params}}
        base = None
        if resume is not None:
            saved = resume / "config.toml"
            if not saved.is_file():
                _fail(f"cannot resume {resume}: no config.toml there (is it a pat train run folder?)")
            base = {k: v for k, v in read_toml(saved, "train").items() if k not in ("out",)}
        try:
            v = resolve(ctx, values, config, base, base_name=f"run {resume}")
        except ConfigError as e:
            _fail(str(e))
        _run(ctx, v, resume, config_values, write_toml)


def _fail(msg: str, code: int = 2):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _run(ctx, v, resume, config_values, write_toml) -> None:
    import torch

    from pat_runtime.devices.errors import DeviceError
    from pat_runtime.loggers import make_loggers
    from pat_runtime.redact import strip_credentials
    from pat_runtime.runs import new_run_dir
    from pat_runtime.trainers.run import METHOD_NAMES, ExperimentConfig, run_experiment
    from pat_runtime.twins import twin_choices

    if v["method"] not in METHOD_NAMES:
        raise typer.BadParameter(f"unknown method {v['method']!r}; choose {', '.join(METHOD_NAMES)}",
                                 param_hint="--method")
    if v["twin"] not in twin_choices():
        raise typer.BadParameter(f"unknown twin {v['twin']!r}; choose {', '.join(twin_choices())}", param_hint="--twin")
    if v["lr"] is not None and not v["lr"] > 0:
        raise typer.BadParameter(f"must be > 0, got {v['lr']}", param_hint="--lr")
    from pat_runtime.signing import KeyFileError, default_key_path, load_signing_key

    try:  # load the key before training: a bad key path fails now, not after an hour of training
        key = load_signing_key(v.get("sign_key")) if v.get("sign_key") or default_key_path().exists() else None
    except KeyFileError as e:
        raise typer.BadParameter(str(e), param_hint="--sign-key") from None
    torch.set_num_threads(v["threads"])
    cfg = ExperimentConfig(device=v["device"], task=v["task"], method=v["method"], twin=v["twin"],
                           twin_path=str(v["twin_path"]) if v["twin_path"] else None, twin_samples=v["twin_samples"],
                           epochs=v["epochs"], batch=v["batch"], lr=v["lr"], layers=v["layers"], hybrid=v["hybrid"],
                           channels=v["channels"], seed=v["seed"], patience=v["patience"],
                           val_fraction=v["val_fraction"], spsa_a=v["spsa_a"], spsa_c=v["spsa_c"],
                           spsa_samples=v["spsa_samples"], join_timeout=v["join_timeout"])
    out = resume if resume is not None else v["out"]
    if out is None:
        out = new_run_dir(strip_credentials(cfg.device), cfg.task, cfg.method, cfg.seed)
    v = {**v, "out": out}
    metrics = None
    if v["metrics_port"] is not None:
        from pat_runtime.metrics_prom import PromMetrics

        metrics = PromMetrics()
        try:
            port = metrics.serve(v["metrics_port"])
        except OSError as e:
            _fail(f"--metrics-port {v['metrics_port']}: {e}")
        typer.echo(f"Prometheus metrics on http://127.0.0.1:{port}/metrics")
    try:
        from pat_runtime.sims.uri import check_sim_uri
        from pat_runtime.devices.registry import factory_for

        factory_for(cfg.device)            # an unknown scheme or bad sim options: refused before any folder
        if cfg.device.startswith("sim:"):
            check_sim_uri(cfg.device)
        first = 1
        if resume is not None:   # refuse before touching the run folder
            from pat_runtime.trainers.checkpoint import check_compatible, load_checkpoint

            state = load_checkpoint(resume)
            check_compatible(state, cfg.to_dict(), None, where=str(resume))
            first = int(state["epoch"]) + 1
        elif v["spsa_tune"] and cfg.method == "spsa":   # a resumed run keeps the gains its config.toml holds
            from pat_runtime.trainers.spsa_tune import tune_spsa

            tuned = asyncio.run(tune_spsa(cfg, progress=v["progress"]))
            typer.echo(f"SPSA gains tuned on validation: a={tuned.best['a']:g}, c={tuned.best['c']:g} "
                       f"(validation accuracy {100 * tuned.best['val_acc']:.1f} % in {tuned.epochs} epochs; "
                       f"{len(tuned.trials)} candidates)")
            cfg.spsa_a, cfg.spsa_c = tuned.best["a"], tuned.best["c"]
            v = {**v, "spsa_a": cfg.spsa_a, "spsa_c": cfg.spsa_c}
        Path(out).mkdir(parents=True, exist_ok=True)
        write_toml(Path(out) / "config.toml", config_values(ctx, v), "train")
        loggers = make_loggers(out, v["tensorboard"], first_epoch=first, text={"command": cfg.command()},
                               notice=lambda m: typer.echo(m, err=True))
        result = asyncio.run(run_experiment(cfg, out=out, progress=v["progress"], resume=resume, loggers=loggers,
                                            on_device=metrics.instrument_device if metrics else None))
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: the checkpoint of the last finished epoch is in {out}/checkpoint.pt; "
                   f"continue with: pat train --resume {out}", err=True)
        raise typer.Exit(130) from None
    except (DeviceError, ValueError, ImportError, OSError) as e:
        _fail(str(e))
    finally:
        if metrics is not None:
            metrics.close()
    s = result.summary
    if s.get("twin"):
        tw = s["twin"]
        typer.echo(f"twin {tw['kind']}: held-out NMSE {tw['nmse_val']:.4f} (noise floor {tw['noise_floor']:.4f}), "
                   f"used for {tw['used_for']}")
    f, sel = s["final"], s["selected"]
    extra = f", twin-predicted {sel['twin_test_acc']:.3f}" if sel.get("twin_test_acc") is not None else ""
    chosen = (f"epoch {sel['epoch']} of {s['epochs_run']}, chosen on validation (val acc {sel['val_acc']:.3f})"
              if sel["selected_on"] == "val" else f"last epoch of {s['epochs_run']} (no validation split)")
    typer.echo(f"{cfg.method} on {strip_credentials(cfg.device)} / {cfg.task}: test accuracy {sel['test_acc']:.3f} "
               f"(physical){extra} of the model from {chosen}; train acc {f['train_acc']:.3f}; {s['epochs_run']} "
               f"epochs in {s['train_s']:.1f} s ({s['samples_per_s']:.0f} samples/s, {s['device_calls']} device calls)")
    for w in s.get("warnings", []):
        typer.secho(f"warning: {w}", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"outputs in {out}/ (metrics.jsonl, tb/, curves.png, summary.json, config.toml, checkpoint.pt, "
               f"model.json, model.pnn)")
    model = Path(out) / "model.pnn"
    if model.exists():
        if key is not None:
            from pat_runtime.artifact import atomic_write, sign_artifact

            atomic_write(model, sign_artifact(model.read_bytes(), key))
        typer.echo(f"model.pnn signed by key {key.key_id}" if key else
                   "model.pnn is unsigned (no key: `pat keys create`; `pat deploy` signs at deploy time)")
