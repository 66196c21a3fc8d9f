"""``pat fleet``: data-parallel (or pipelined) PAT across a simulated fleet, with fault injection.

    pat fleet --nodes 16 --faults "drop=0.05,latency=0.01,jitter=0.005,crash=2,corrupt=0.01,slow=1" \\
              --transport inproc --device sim:plate --task digits
    pat fleet --backend ray --address auto --nodes 64 --nodes-per-actor 16 --actor-cpus 0.5

Every node is a different unit of the device (own hidden variation) with its own twin. Each epoch line
says that the exactly-once ledger held; the end prints per-node latency / utilization and fault counts.
Fault keys: see :class:`pat_runtime.fleet.simfleet.FaultSpec`.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from pat_runtime import defaults as D


def register(app: typer.Typer) -> None:
    """Add the `fleet` command to `app`."""

    @app.command("fleet")
    def fleet(
        ctx: typer.Context,
        nodes: int = typer.Option(16, min=1, help="number of simulated edge nodes"),
        faults: str = typer.Option("none", help='e.g. "drop=0.05,latency=0.01,jitter=0.005,crash=2,corrupt=0.01,slow=1"'),
        transport: str = typer.Option("inproc", help="inproc (virtual nodes on one loop) | zmq (TCP loopback)"),
        backend: str = typer.Option("local", help="local (nodes in this process) | ray (nodes in Ray actors, "
                                    "connected over ZeroMQ; needs the 'ray' extra)"),
        address: str | None = typer.Option(None, help="ray: cluster address (auto | HOST:PORT); "
                                           "default: start a private local Ray"),
        nodes_per_actor: int = typer.Option(1, min=1, help="ray: virtual nodes multiplexed per actor"),
        actor_cpus: float = typer.Option(0.25, min=0.0, help="ray: CPUs declared per actor"),
        device: str = typer.Option("sim:plate", help="sim:KIND[?opts] (node i is unit i) or echo:?latency=S"),
        task: str = typer.Option("digits", help="task name (pat_runtime.datasets.TASKS)"),
        n_train: int | None = typer.Option(None, min=1, help="training samples (default: the task's split)"),
        n_test: int | None = typer.Option(None, min=1, help="test samples"),
        mode: str = typer.Option("data", help="data (data-parallel shards) | pipeline (layer k on node k)"),
        epochs: int = typer.Option(4, min=1, help="training epochs"),
        batch: int = typer.Option(64, min=1, help="mini-batch size (one synchronous update per batch)"),
        shard: int | None = typer.Option(None, min=1, help="samples per shard / micro-batch "
                                         "(default max(4, batch/nodes))"),
        lr: float | None = typer.Option(None, min=0.0, help=f"Adam learning rate (default {D.LR_HYBRID} hybrid, "
                                                                 f"{D.LR} --physical)"),
        twin: str = typer.Option("greybox", help="per-device twin: greybox | residual | mlp | nominal (shared)"),
        twin_samples: int = typer.Option(256, min=1, help="measurements per node to fit its twin"),
        twin_epochs: int = typer.Option(5, min=0, help="twin fitting epochs"),
        layers: int = typer.Option(D.LAYERS, min=1, help="physical layers"),
        hybrid: bool = typer.Option(True, "--hybrid/--physical",
                                    help="digital input/output layers around the device (--physical: as pat train)"),
        cap: int = typer.Option(2, min=1, help="in-flight shards per node"),
        timeout: float = typer.Option(0.3, min=0.001, help="request timeout (s) before a retry (same request id)"),
        seed: int = typer.Option(0, min=0, help="seed (data, init, faults)"),
        json_out: Path | None = typer.Option(None, "--json", help="write the summary as JSON here"),
        threads: int = typer.Option(1, min=1, help="torch CPU threads"),
        config: Path | None = typer.Option(None, "--config", help="read options from this TOML file (flags win)"),
    ) -> None:
        """Train across a simulated fleet with fault injection and print ledger, metrics and faults."""
        import torch

        from pat_runtime.config import ConfigError, resolve

        try:
            v = resolve(ctx, {k: val for k, val in locals().items() if k not in ("ctx", "torch")}, config)
        except ConfigError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        (nodes, faults, transport, backend, address, nodes_per_actor, actor_cpus, device, task, n_train, n_test, mode,
         epochs, batch, shard, lr, twin, twin_samples, twin_epochs, layers, hybrid, cap, timeout, seed, json_out,
         threads) = (
            v[k] for k in ("nodes", "faults", "transport", "backend", "address", "nodes_per_actor", "actor_cpus",
                           "device", "task", "n_train", "n_test", "mode", "epochs", "batch", "shard", "lr", "twin",
                           "twin_samples", "twin_epochs", "layers", "hybrid", "cap", "timeout", "seed", "json_out",
                           "threads"))
        if lr is not None and not lr > 0:
            raise typer.BadParameter(f"must be > 0, got {lr}", param_hint="--lr")
        if device.startswith("sim:"):
            from pat_runtime.sims.uri import check_sim_uri

            try:
                check_sim_uri(device)
            except ValueError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2) from None

        from pat_runtime.devices.errors import DeviceError
        from pat_runtime.fleet.experiment import FleetConfig, run_fleet
        from pat_runtime.fleet.scheduler import FleetError
        from pat_runtime.fleet.simfleet import FaultSpec

        if transport not in ("inproc", "zmq"):
            raise typer.BadParameter("choose inproc or zmq", param_hint="--transport")
        try:
            spec = FaultSpec.parse(faults)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--faults") from None
        if backend not in ("local", "ray"):
            raise typer.BadParameter("choose local or ray", param_hint="--backend")
        if backend == "ray":
            from pat_runtime.fleet.ray_backend import RAY_MISSING, ray_available

            if not ray_available():
                raise typer.BadParameter(RAY_MISSING, param_hint="--backend")
            if spec.corrupt:
                raise typer.BadParameter("corrupt= is only injected on the inproc transport", param_hint="--faults")
            transport = "zmq"
        elif address is not None:
            raise typer.BadParameter("--address needs --backend ray", param_hint="--address")
        torch.set_num_threads(threads)
        cfg = FleetConfig(nodes=nodes, device=device, faults=str(spec), transport=transport, backend=backend,
                          address=address, nodes_per_actor=nodes_per_actor, actor_cpus=actor_cpus,
                          task=task, n_train=n_train, n_test=n_test, mode=mode, epochs=epochs, batch=batch,
                          shard=shard, lr=lr, twin=twin, twin_samples=twin_samples, twin_epochs=twin_epochs,
                          layers=layers, hybrid=hybrid, cap=cap, timeout=timeout, seed=seed)
        try:
            summary = asyncio.run(run_fleet(cfg, log=typer.echo))
        except (DeviceError, FleetError, ValueError, ImportError, OSError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"final physical test accuracy {summary['final_test_acc']:.3f}; "
                   f"{summary['wall_s']:.1f} s in all")
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(summary, indent=1, default=str))
            typer.echo(f"summary written to {json_out}")
