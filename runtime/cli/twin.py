"""``pat twin``: collect measurements, fit a digital twin and report its held-out error.

    pat twin --device sim:plate --kind greybox --save runs/plate-greybox.pt
    pat twin --device sim:plate --kind nominal          # how wrong is the datasheet model?
    pat twin --device sim:plate --kind best             # fit all kinds, keep the lowest validation NMSE
    pat twin --device "sim:plate?effects=0" --kind mlp  # a plate without its second-order effects
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import typer

from pat_runtime import defaults as D


def register(app: typer.Typer) -> None:
    @app.command("twin")
    def twin(
        ctx: typer.Context,
        device: str = typer.Option("sim:plate", help="device URI"),
        kind: str = typer.Option("greybox", help="mlp | greybox | residual | nominal | best (fit all, keep the "
                                                  "lowest validation NMSE)"),
        samples: int | None = typer.Option(None, min=2, help="random (x, θ) measurements (default per kind)"),
        epochs: int | None = typer.Option(None, min=0, help="fitting epochs (default per kind)"),
        repeats: int = typer.Option(2, min=1, help="repeat each measurement to estimate the noise floor"),
        theta_every: int = typer.Option(16, min=1, help="draw a new θ every N rows (one device call each)"),
        seed: int = typer.Option(0, min=0),
        save: Path | None = typer.Option(None, help="save the twin here (load with pat_runtime.twins.load_twin)"),
        report: Path | None = typer.Option(None, help="write the report as JSON here"),
        threads: int = typer.Option(1, min=1, help="torch CPU threads"),
        join_timeout: float = typer.Option(D.JOIN_TIMEOUT, min=0.0, help="seconds to wait for the device"),
        config: Path | None = typer.Option(None, "--config", help="read options from this TOML file (flags win)"),
    ) -> None:
        """Fit a twin of a device and print its held-out NMSE next to the noise floor."""
        import torch

        from pat_runtime.config import ConfigError, resolve

        try:
            v = resolve(ctx, {k: val for k, val in locals().items() if k not in ("ctx", "torch")}, config)
        except ConfigError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        device, kind, samples, epochs, repeats, theta_every, seed, save, report, threads, join_timeout = (
            v[k] for k in ("device", "kind", "samples", "epochs", "repeats", "theta_every", "seed", "save", "report",
                           "threads", "join_timeout"))

        from pat_runtime.devices.errors import DeviceError
        from pat_runtime.devices.factory import make_device
        from pat_runtime.twins import DEFAULTS, build_twin, save_twin, twin_choices

        if kind not in twin_choices():
            raise typer.BadParameter(f"unknown kind {kind!r}; choose {', '.join(twin_choices())}", param_hint="--kind")
        torch.set_num_threads(threads)
        n = int(samples or DEFAULTS.get(kind, DEFAULTS["mlp"])["n_samples"])
        groups = -(-n // theta_every)
        ep = epochs if epochs is not None else DEFAULTS.get(kind, DEFAULTS["mlp"])["epochs"]
        typer.echo(f"measuring {n} (x, θ) rows: {groups * repeats} device calls ({groups} θ, one per {theta_every} "
                   f"rows, x {repeats} repeats); then fitting {'every candidate' if kind == 'best' else kind}"
                   f"{'' if kind == 'best' else f' for {ep} epochs'}")
        t0 = time.perf_counter()

        async def go():
            dev = make_device(device)
            await dev.connect(timeout=join_timeout)
            try:
                return await build_twin(dev, kind, n_samples=samples, epochs=epochs, seed=seed, repeats=repeats,
                                        theta_every=theta_every)
            finally:
                await dev.close()

        try:
            tw, rep, _ = asyncio.run(go())
        except (DeviceError, ValueError, ImportError, OSError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(str(rep))
        typer.echo(f"total {time.perf_counter() - t0:.0f} s (measuring + fitting)")
        if save:
            save_twin(tw, save)
            typer.echo(f"saved {save}")
        if report:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(rep.to_dict(), indent=2) + "\n")
