"""``pat instruments``: start simulated SCPI instruments on loopback (a bench to drive with ``visa:``).

    pat instruments --unit 0                      # prints the visa:plate?... URI, serves until Ctrl-C
    pat train --device 'visa:plate?awg=TCPIP::127.0.0.1::5025::SOCKET&dig=TCPIP::127.0.0.1::5026::SOCKET'
"""
from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("instruments")
    def instruments(
        kind: str = typer.Option("plate", help="the simulated bench (plate: an AWG and a digitizer)"),
        unit: int = typer.Option(0, min=0, help="which unit of the plate (its own hidden variation)"),
        seed: int = typer.Option(0, min=0, help="seed of the unit variation"),
        noise: float = typer.Option(0.01, min=0.0, help="measurement noise (fraction of the output range)"),
        host: str = typer.Option("127.0.0.1", help="address to listen on"),
        awg_port: int = typer.Option(5025, min=0, max=65535, help="AWG port (0: any free port)"),
        dig_port: int = typer.Option(5026, min=0, max=65535, help="digitizer port (0: any free port)"),
        uri_file: Optional[Path] = typer.Option(None, help="also write the visa: device URI to this file"),
    ) -> None:
        """Serve a simulated SCPI bench and print the device URI that drives it through PyVISA."""
        if kind != "plate":
            raise typer.BadParameter("only the plate bench is simulated", param_hint="--kind")
        try:
            asyncio.run(_serve(host, awg_port, dig_port, uri_file, unit=unit, seed=seed, noise=noise))
        except OSError as e:
            typer.echo(f"error: cannot listen on {host}: {e}", err=True)
            raise typer.Exit(2) from None


async def _serve(host, awg_port, dig_port, uri_file, **sim_options) -> None:
    from pat_runtime.sims.scpi.plate import start_plate_bench, visa_uri

    bench, awg, dig = await start_plate_bench(host, awg_port, dig_port, **sim_options)
    uri = visa_uri(awg, dig)
    typer.echo(f"AWG       {bench.awg.idn} at {awg.resource}")
    typer.echo(f"digitizer {bench.dig.idn} at {dig.resource}")
    typer.echo(f"device URI: '{uri}'")
    typer.echo("serving until Ctrl-C", err=True)
    if uri_file is not None:
        uri_file.write_text(uri + "\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await awg.close()
        await dig.close()
