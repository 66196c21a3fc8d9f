"""`pat stream`: continuous PAT from a live labelled source; `pat stream-publish`: a sample producer.

    pat stream --device 'sim:plate?drift=0.0015' --source sim-drift --task digits --steps 600 --dir runs/stream
    pat stream --device sim:plate --source mqtt://127.0.0.1:1883/lab/samples --dir runs/stream --export model.pnn
    pat stream-publish --to mqtt://127.0.0.1:1883/lab/samples --task digits --count 500 --rate 50

``--dir`` holds the checkpoints (and the MQTT spool); running the same command again resumes where the
last checkpoint left off, without losing or repeating samples. SIGINT / SIGTERM stop cleanly (final
checkpoint). One JSON line per ``--log-every`` steps goes to stdout.
"""
from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Optional

import typer

from pat_runtime import defaults as D


def register(app: typer.Typer) -> None:
    """Add the `stream` and `stream-publish` commands to `app`."""

    @app.command("stream")
    def stream(
        ctx: typer.Context,
        device: str = typer.Option("sim:plate?drift=0.0015", "--device", "-d", help="device URI"),
        source: str = typer.Option("sim-drift", "--source", "-s",
                                   help="sim-drift (the task's training set, cycled) or mqtt://HOST:PORT/TOPIC"),
        task: str = typer.Option("digits", help="task: input/label dims, held-out set, and the sim-drift stream"),
        directory: Path = typer.Option(Path("runs/stream"), "--dir", help="checkpoints (and MQTT spool)"),
        steps: Optional[int] = typer.Option(None, help="stop after this many new steps (default: run until the "
                                                       "source ends or SIGINT)"),
        batch: int = typer.Option(32, min=1, help="mini-batch size of the sim-drift stream"),
        init: Optional[Path] = typer.Option(None, help="start from this .pnn artifact (else a fresh PNN)"),
        twin: str = typer.Option("greybox", help="twin kind (fitted on the device before streaming starts)"),
        twin_samples: Optional[int] = typer.Option(None, help="measurements for the initial twin fit"),
        lr: float = typer.Option(D.LR_ONLINE, min=0.0, help="Adam learning rate (online updates)"),
        layers: int = typer.Option(D.LAYERS, min=1, help="physical layers of a fresh PNN"),
        refresh_every: int = typer.Option(100, min=0, help="periodic twin refit every N steps (0: on drift only)"),
        no_refresh: bool = typer.Option(False, "--no-refresh", help="never refit the twin (frozen twin)"),
        frozen: bool = typer.Option(False, "--frozen", help="serve only, no updates (frozen model)"),
        replay: int = typer.Option(4096, min=1, help="replay buffer capacity (measurements)"),
        checkpoint_every: int = typer.Option(50, min=1, help="checkpoint every N steps"),
        eval_every: int = typer.Option(0, min=0, help="held-out evaluation every N steps (0: never)"),
        log_every: int = typer.Option(25, min=0, help="print a JSON progress line every N steps (0: never)"),
        export: Optional[Path] = typer.Option(None, help="write the final model as a .pnn artifact"),
        seed: int = typer.Option(0, min=0),
        config: Optional[Path] = typer.Option(None, "--config", help="read options from this TOML file (flags win)"),
    ) -> None:
        """Train a PNN continuously from SOURCE on DEVICE (resumes from --dir)."""
        import torch

        from pat_runtime.config import ConfigError, config_values, resolve
        from pat_runtime.stream.run_config import check_resume

        try:
            v = resolve(ctx, {k: val for k, val in locals().items() if k not in ("ctx", "torch")}, config)
            (device, source, task, directory, steps, batch, init, twin, twin_samples, lr, layers, refresh_every,
             no_refresh, frozen, replay, checkpoint_every, eval_every, log_every, export, seed) = (
                v[k] for k in ("device", "source", "task", "directory", "steps", "batch", "init", "twin",
                               "twin_samples", "lr", "layers", "refresh_every", "no_refresh", "frozen", "replay",
                               "checkpoint_every", "eval_every", "log_every", "export", "seed"))
            if steps is not None and steps < 1:
                raise ConfigError(f"--steps must be >= 1, got {steps}")
            check_resume(directory, {"device": device, "source": source, "task": task, "layers": layers,
                                     "twin": twin, "init": str(init) if init else None},
                         record=config_values(ctx, v))
        except ConfigError as e:   # includes a refused resume
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        torch.set_num_threads(1)
        try:
            summary = asyncio.run(_stream(device, source, task, directory, steps, batch, init, twin, twin_samples,
                                          lr, layers, refresh_every, no_refresh, frozen, replay, checkpoint_every,
                                          eval_every, log_every, export, seed))
        except (ValueError, OSError, ImportError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps({"summary": summary}))

    @app.command("stream-publish")
    def stream_publish(
        to: str = typer.Option(..., "--to", help="mqtt://HOST:PORT/TOPIC"),
        task: str = typer.Option("digits"),
        count: int = typer.Option(100, min=1, help="messages to publish"),
        start: int = typer.Option(0, min=0, help="first sequence number"),
        batch: int = typer.Option(32, min=1),
        rate: float = typer.Option(0.0, min=0.0, help="messages per second (0: as fast as possible)"),
        seed: int = typer.Option(0, min=0),
    ) -> None:
        """Publish COUNT labelled mini-batches of TASK (with sequence numbers) to an MQTT topic."""
        try:
            n = asyncio.run(_publish(to, task, count, start, batch, rate, seed))
        except (ValueError, OSError, ImportError) as e:
            typer.echo(f"error: cannot publish to {to}: {type(e).__name__}: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"published {n} messages (seq {start}..{start + n - 1}) to {to}")


async def _publish(to, task, count, start, batch, rate, seed) -> int:
    import aiomqtt

    from pat_runtime.datasets import load_task
    from pat_runtime.stream.sources import MqttUrl, encode_sample, task_stream

    t = load_task(task, seed=seed)
    u = MqttUrl.parse(to)
    n = 0
    async with aiomqtt.Client(u.host, u.port, **u.login()) as client:
        async for s in task_stream(t.x_train, t.y_train, batch, seed=seed, limit=start + count)(start):
            await client.publish(u.topic, encode_sample(s.seq, s.x, s.y), qos=1)
            n += 1
            if rate:
                await asyncio.sleep(1.0 / rate)
    return n


async def _stream(device_uri, source, task_name, directory, steps, batch, init, twin_kind, twin_samples, lr, layers,
                  refresh_every, no_refresh, frozen, replay, checkpoint_every, eval_every, log_every, export, seed):
    import torch

    from pat_runtime.devices.factory import make_device
    from pat_runtime.artifact import load_artifact, pnn_from_artifact, pnn_to_artifact, save_artifact
    from pat_runtime.datasets import load_task
    from pat_runtime.pat import build_pnn
    from pat_runtime.redact import redact_uri
    from pat_runtime.stream.checkpoint import CheckpointManager
    from pat_runtime.stream.refresh import RefreshConfig
    from pat_runtime.stream.sources import IteratorSource, MqttSource, task_stream
    from pat_runtime.stream.trainer import StreamConfig, StreamTrainer
    from pat_runtime.twins import build_twin, make_twin, sim_options_of

    t = load_task(task_name, seed=seed)
    dev = make_device(device_uri)
    await dev.connect()
    resuming = CheckpointManager(directory).latest() is not None
    opts = {"sim_options": sim_options_of(dev)} if twin_kind in ("nominal", "greybox", "residual") else {}
    if resuming:  # the checkpoint holds the twin; no need to measure anything first
        tw = make_twin(twin_kind, dev.spec, **opts)
    else:
        tw, report, _ = await build_twin(dev, twin_kind, n_samples=twin_samples, seed=seed)
        print(json.dumps({"twin": str(report)}), flush=True)
    if init is not None:
        pnn = pnn_from_artifact(load_artifact(init, spec=dev.spec), dev, twin=tw)
    else:
        pnn = build_pnn(t.n_features, t.n_classes, tw, device=dev, layers=layers, seed=seed)
        pnn.calibrate(torch.from_numpy(t.x_train[:512]))
    if source == "sim-drift":
        src = IteratorSource(task_stream(t.x_train, t.y_train, batch, seed=seed))
    elif source.startswith(("mqtt://", "tcp://")):
        src = MqttSource(source, directory,  # the line a publisher (or a script) can wait for
                         on_subscribed=lambda topic: print(json.dumps({"subscribed": topic}), flush=True))
    else:
        raise ValueError(f"unknown source {source!r}: use sim-drift or mqtt://HOST:PORT/TOPIC")
    refresh = None if no_refresh else RefreshConfig(every=refresh_every,
                                                    min_gap=min(50, refresh_every) if refresh_every else 50)
    cfg = StreamConfig(lr=lr, update_model=not frozen, refresh=refresh, replay_capacity=replay,
                       checkpoint_every=checkpoint_every, eval_every=eval_every)

    def on_step(rec):
        if log_every and rec["step"] % log_every == 0:
            line = {k: rec[k] for k in ("step", "seq", "loss", "acc", "twin_err")}
            if trainer.evals:
                line["eval_acc"] = trainer.evals[-1]["acc"]
            print(json.dumps(line), flush=True)

    trainer = StreamTrainer(pnn, tw, src, checkpoint_dir=directory, config=cfg, on_step=on_step, seed=seed,
                            eval_data=(t.x_test, t.y_test) if eval_every else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        summary = await trainer.run(max_steps=steps, stop=stop)
    finally:
        trainer.close()
        await dev.close()
    if export is not None:
        art = pnn_to_artifact(pnn, f"stream-{trainer.step}", metadata={
            "source": redact_uri(source), "device": redact_uri(device_uri), "task": task_name, "steps": trainer.step,
            "recent_acc": summary["recent_acc"], "eval_acc": summary["eval_acc"]})
        from pat_runtime.signing import default_key_path, load_signing_key

        key = load_signing_key() if default_key_path().exists() else None  # signed when `pat keys create` ran
        summary["artifact_id"] = save_artifact(export, art, key)
        summary["export"] = str(export)
    return summary

