"""``pat broker-config`` (Mosquitto users, ACL, password file, config) and ``pat curve-keys`` (ZeroMQ CURVE keys).

    pat broker-config broker/ --node node-1 --node node-2 [--coordinator coordinator] [--port 1883]
        [--tls-ca ca.crt --tls-cert server.crt --tls-key server.key --tls-port 8883]
    mosquitto -c broker/mosquitto.conf
    pat edge --device sim:plate --connect mqtt://127.0.0.1:1883 --node-id node-1 \\
        --credentials broker/credentials/node-1.toml

    pat curve-keys keys/ --node node-1 --node node-2
    pat edge ... --connect tcp://10.0.0.2:5555 --curve-server-key keys/coordinator.key \\
        --curve-cert keys/node-1.key_secret
    pat train --device 'zmq://0.0.0.0:5555/node-1?curve_cert=keys/coordinator.key_secret&curve_keys=keys/keys.txt'

See docs/security.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("broker-config")
    def broker_config(
        out: Path = typer.Argument(..., help="folder for mosquitto.conf, passwd, acl and credentials/"),
        node: List[str] = typer.Option(..., "--node", "-n", help="a node id (its own broker user); repeat"),
        coordinator: List[str] = typer.Option(["coordinator"], "--coordinator",
                                              help="coordinator user(s): may send requests and deploys"),
        observer: List[str] = typer.Option([], "--observer", help="read-only users (status, predictions)"),
        stream: List[str] = typer.Option([], "--stream", help="a sample stream topic (coordinators read it)"),
        producer: List[str] = typer.Option([], "--producer", help="users that may publish to the --stream topics"),
        prefix: str = typer.Option("pat", help="topic prefix"),
        host: str = typer.Option("127.0.0.1", help="listener address"),
        port: int = typer.Option(1883, help="plain listener port (0: no plain listener, TLS only)"),
        tls_ca: Optional[Path] = typer.Option(None, help="CA file for the TLS listener (client certificates)"),
        tls_cert: Optional[Path] = typer.Option(None, help="broker certificate for the TLS listener"),
        tls_key: Optional[Path] = typer.Option(None, help="broker key for the TLS listener"),
        tls_port: int = typer.Option(8883, help="TLS listener port"),
        max_queued: int = typer.Option(1000, min=1, help="max queued messages per client"),
        max_packet: int = typer.Option(64 * 1024 * 1024, min=1024, help="max MQTT packet size (bytes)"),
    ) -> None:
        """Write a Mosquitto config with one user per node and an ACL (nodes publish only their own topics)."""
        from pat_runtime.transport.mqtt.acl import AclSpec, TlsFiles, write_broker_config

        tls = None
        if any((tls_ca, tls_cert, tls_key)):
            if not all((tls_ca, tls_cert, tls_key)):
                raise typer.BadParameter("TLS needs --tls-ca, --tls-cert and --tls-key together")
            tls = TlsFiles(tls_ca, tls_cert, tls_key, tls_port)
        if port == 0 and tls is None:
            raise typer.BadParameter("--port 0 disables the plain listener: give the --tls-* files")
        try:
            spec = AclSpec(list(node), list(coordinator), list(observer), list(producer), list(stream), prefix)
            files = write_broker_config(out, spec, host=host, port=port or None, tls=tls, max_queued=max_queued,
                                        max_packet=max_packet)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        typer.echo(f"wrote {out}/mosquitto.conf, passwd, acl and {len(files)} credentials files "
                   f"({out}/credentials/USER.toml, mode 600: give each node only its own)")
        typer.echo(f"run: mosquitto -c {out}/mosquitto.conf")

    @app.command("curve-keys")
    def curve_keys(
        out: Path = typer.Argument(..., help="folder for the certificates and keys.txt"),
        node: List[str] = typer.Option(..., "--node", "-n", help="a node id; repeat"),
    ) -> None:
        """Create ZeroMQ CURVE certificates (coordinator + one per node) and keys.txt (node id -> public key)."""
        import zmq.auth

        from pat_runtime.transport.zmq.identity import load_keys

        out.mkdir(parents=True, exist_ok=True)
        names = ["coordinator", *node]
        if len(set(names)) != len(names):
            raise typer.BadParameter("node ids must be unique and not 'coordinator'")
        lines = ["# node id -> CURVE public key: the only key that may claim that node id"]
        for name in names:
            public_file, secret_file = zmq.auth.create_certificates(str(out), name)
            Path(secret_file).chmod(0o600)
            if name != "coordinator":
                lines.append(f"{name} {zmq.auth.load_certificate(public_file)[0].decode()}")
        (out / "keys.txt").write_text("\n".join(lines) + "\n")
        load_keys(out / "keys.txt")  # validate what was written
        typer.echo(f"wrote {out}/coordinator.key(_secret), {len(node)} node certificates and {out}/keys.txt")
