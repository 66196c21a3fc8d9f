"""`pat edge`: serve a device as an edge node.

    pat edge --device sim:plate --connect tcp://127.0.0.1:5555 --node-id node1 [--heartbeat 0.5]
    pat edge --device sim:circuit?unit=2 --connect mqtt://127.0.0.1:1883 --node-id node2

SIGTERM / SIGINT stop the node cleanly (it says bye to the coordinator and exits with status 0).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the `edge` command to `app`."""

    @app.command("edge")
    def edge(
        device: str = typer.Option(..., "--device", "-d", help="device URI, e.g. sim:plate or sim:circuit?unit=2"),
        connect: str = typer.Option(..., "--connect", "-c", help="coordinator: tcp://HOST:PORT or mqtt://HOST:PORT"),
        node_id: str = typer.Option(..., "--node-id", "-n", help="this node's id (unique in the fleet)"),
        heartbeat: float = typer.Option(0.5, help="seconds between heartbeats"),
        max_concurrency: int = typer.Option(8, help="requests served at once"),
        curve_server_key: Optional[str] = typer.Option(
            None, help="ZeroMQ CURVE: the coordinator's public key (Z85) or a zmq.auth certificate file"),
        curve_cert: Optional[Path] = typer.Option(
            None, help="ZeroMQ CURVE: this node's secret certificate file (zmq.auth.create_certificates)"),
        deploy_dir: Optional[Path] = typer.Option(
            None, help="accept deployed PNNs (deploy/rollback/infer), persisted in this directory"),
        deploy_mqtt: Optional[str] = typer.Option(
            None, help="with --deploy-dir: also follow the retained deploy topic and publish predictions on "
                       "this MQTT broker (mqtt://HOST:PORT)"),
    ) -> None:
        """Serve DEVICE to the coordinator at CONNECT as NODE_ID until SIGTERM / SIGINT."""
        from edge.agent import run_edge

        kw = {"max_concurrency": max_concurrency}
        if connect.startswith(("tcp://", "ipc://")):
            if curve_server_key or curve_cert:
                kw["curve"] = _curve_client(curve_server_key, curve_cert)
        try:
            asyncio.run(_run_with_deployment(run_edge, device, connect, node_id, heartbeat, kw, deploy_dir,
                                             deploy_mqtt))
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None


async def _run_with_deployment(run_edge, device, connect, node_id, heartbeat, kw, deploy_dir, deploy_mqtt):
    """``run_edge`` plus, with ``deploy_dir``, the :class:`edge.deployed.Deployment` plugin (closed at exit)."""
    if deploy_dir is None:
        return await run_edge(device, connect, node_id, heartbeat=heartbeat, **kw)
    from edge.deployed import Deployment

    async with Deployment(deploy_dir, mqtt=deploy_mqtt) as dep:
        await run_edge(device, connect, node_id, heartbeat=heartbeat, plugins=[dep], **kw)


def _curve_client(server_key: str | None, cert: Path | None):
    from runtime.transport.zmq import CurveClient, load_cert

    if not server_key:
        raise typer.BadParameter("--curve-server-key is required with CURVE")
    if Path(server_key).is_file():
        server_key = load_cert(server_key)[0]
    public = secret = None
    if cert is not None:
        public, secret = load_cert(cert)
        if secret is None:
            raise typer.BadParameter(f"{cert} holds no secret key")
    return CurveClient.create(server_key, public, secret)
