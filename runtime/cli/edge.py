"""`pat edge`: serve a device as an edge node.

    pat edge --device sim:plate --connect tcp://127.0.0.1:5555 --node-id node1 [--heartbeat 0.5]
    pat edge --device sim:circuit?unit=2 --connect mqtt://127.0.0.1:1883 --node-id node2 \
        --credentials broker/credentials/node2.toml           # from `pat broker-config` (docs/security.md)
    pat edge --device sim:plate --connect tcp://127.0.0.1:5555 --node-id plate1 --deploy-dir edge-plate1 \
        --trusted-keys ~/.config/pat/trusted_keys      # deployed models must be signed by a trusted key

SIGTERM / SIGINT stop the node cleanly (it says bye to the coordinator and exits with status 0).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer

from pat_runtime.devices.uri import parse_uri


def register(app: typer.Typer) -> None:
    """Add the `edge` command to `app`."""

    @app.command("edge")
    def edge(
        device: str = typer.Option(..., "--device", "-d", help="device URI, e.g. sim:plate or sim:circuit?unit=2"),
        connect: str = typer.Option(..., "--connect", "-c", help="coordinator: tcp://HOST:PORT or mqtt://HOST:PORT"),
        node_id: str = typer.Option(..., "--node-id", "-n", help="this node's id (unique in the fleet)"),
        heartbeat: float = typer.Option(0.5, min=0.01, help="seconds between heartbeats"),
        max_concurrency: int = typer.Option(8, min=1, help="requests served at once"),
        threads: int = typer.Option(1, min=1, help="torch CPU threads for the device's simulator / model (1: "
                                                     "no intra-op thread pool contending with other processes)"),
        curve_server_key: Optional[str] = typer.Option(
            None, help="ZeroMQ CURVE: the coordinator's public key (Z85) or a zmq.auth certificate file"),
        curve_cert: Optional[Path] = typer.Option(
            None, help="ZeroMQ CURVE: this node's secret certificate file (zmq.auth.create_certificates)"),
        deploy_dir: Optional[Path] = typer.Option(
            None, help="accept deployed PNNs (deploy/rollback/infer), persisted in this directory"),
        deploy_mqtt: Optional[str] = typer.Option(
            None, help="with --deploy-dir: also follow the retained deploy topic and publish predictions on "
                       "this MQTT broker (mqtt://HOST:PORT; default: --connect when that is an MQTT broker)"),
        trusted_keys: Optional[Path] = typer.Option(
            None, help="with --deploy-dir: accept only artifacts signed by a key in this file (one "
                       "'ed25519:BASE64' per line; default $PAT_HOME/trusted_keys, re-read at every deploy)"),
        metrics_port: Optional[int] = typer.Option(None, min=0, max=65535,
                                                   help="serve Prometheus /metrics on this port (127.0.0.1)"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="do not print the serving / connection state"),
        credentials: Optional[Path] = typer.Option(
            None, help="MQTT: TOML file with username/password (and TLS ca/cert/key), e.g. from "
                       "`pat broker-config`; else $PAT_MQTT_CREDENTIALS / $PAT_MQTT_PASSWORD"),
        insecure: bool = typer.Option(
            False, "--insecure", help="ZeroMQ: allow a non-loopback coordinator without CURVE (warned)"),
        drift_interval: Optional[float] = typer.Option(
            None, help="with --deploy-dir: seconds between drift checks of the serving model on the unit's "
                       "calibration set (recalibrate or alert below the deployer's threshold)"),
    ) -> None:
        """Serve DEVICE to the coordinator at CONNECT as NODE_ID until SIGTERM / SIGINT."""
        import torch

        from pat_runtime.edge.agent import run_edge
        from pat_runtime.edge.status import EdgeStatus

        torch.set_num_threads(threads)

        if deploy_dir is not None and deploy_mqtt is None and connect.startswith(("mqtt://", "mqtts://")):
            deploy_mqtt = connect   # the broker it already talks to (no need to repeat the URL)
        extra: list = [] if quiet else [EdgeStatus(node_id, connect, echo=lambda m: typer.echo(m, err=True))]
        metrics = None
        if metrics_port is not None:
            from pat_runtime.metrics_prom import PromMetrics

            metrics = PromMetrics()
            try:
                port = metrics.serve(metrics_port)
            except OSError as e:
                typer.echo(f"error: --metrics-port {metrics_port}: {e}", err=True)
                raise typer.Exit(2) from None
            extra.append(metrics.edge_plugin)
            typer.echo(f"Prometheus metrics on http://127.0.0.1:{port}/metrics", err=True)
        kw = {"max_concurrency": max_concurrency}
        if connect.startswith(("tcp://", "ipc://")):
            if curve_server_key or curve_cert:
                kw["curve"] = _curve_client(curve_server_key, curve_cert)
            kw["insecure"] = insecure
        if credentials is not None:
            connect = _with_credentials(connect, credentials)
            deploy_mqtt = _with_credentials(deploy_mqtt, credentials) if deploy_mqtt else None
        from pat_runtime.devices.errors import DeviceError

        try:
            trust = _trusted(trusted_keys) if deploy_dir is not None else None
            asyncio.run(_run_with_deployment(run_edge, device, connect, node_id, heartbeat, kw, deploy_dir,
                                             deploy_mqtt, extra, drift_interval, trust))
        except (ValueError, DeviceError, OSError, ImportError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        finally:
            for p in extra:
                getattr(p, "close", lambda: None)()
            if metrics is not None:
                metrics.close()


def _trusted(path: Path | None) -> Path:
    """The trusted-keys file; say so at start when it lists no key (every deployment would be refused)."""
    from pat_runtime.signing import KeyFileError, TrustedKeys, default_trust_path

    path = path or default_trust_path()
    try:
        n = len(TrustedKeys.from_file(path))
    except KeyFileError as e:
        raise typer.BadParameter(str(e), param_hint="--trusted-keys") from None
    if n == 0:
        typer.echo(f"warning: {path} lists no trusted key: every deployment will be refused until one is added "
                   f"(`pat keys create` on this machine, or `pat keys trust KEY --file {path}`)", err=True)
    return path


async def _run_with_deployment(run_edge, device, connect, node_id, heartbeat, kw, deploy_dir, deploy_mqtt,
                               extra=(), drift_interval=None, trusted_keys=None):
    """``run_edge`` plus, with ``deploy_dir``, the :class:`pat_runtime.edge.deployed.Deployment` and
    :class:`pat_runtime.edge.calibration.Calibrator` plugins (closed at exit)."""
    if deploy_dir is None:
        return await run_edge(device, connect, node_id, heartbeat=heartbeat, plugins=list(extra), **kw)
    from pat_runtime.edge.calibration import Calibrator
    from pat_runtime.edge.deployed import Deployment

    async with Deployment(deploy_dir, mqtt=deploy_mqtt, trusted_keys=trusted_keys) as dep:
        cal = Calibrator(dep, interval=drift_interval)
        try:
            await run_edge(device, connect, node_id, heartbeat=heartbeat, plugins=[dep, cal, *extra], **kw)
        finally:
            await cal.close()


def _with_credentials(url: str, credentials: Path) -> str:
    """``url`` with ``credentials=FILE`` in its query (a path, not a secret: see pat_runtime.transport.mqtt.credentials)."""
    u = parse_uri(url, what="--connect")
    if u.scheme not in ("mqtt", "mqtts"):
        raise typer.BadParameter("--credentials is for mqtt:// and mqtts:// URLs", param_hint="--credentials")
    query = [(k, v) for k, v in u.query if k != "credentials"]
    return u.geturl(query=[*query, ("credentials", str(credentials.resolve()))])


def _curve_client(server_key: str | None, cert: Path | None):
    from pat_runtime.transport.zmq import CurveClient, load_cert

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
