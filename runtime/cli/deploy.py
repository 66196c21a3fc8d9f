"""`pat deploy`: ship a trained PNN artifact (.pnn) to edge nodes, roll back, or inspect one.

    pat deploy model.pnn --to zmq://127.0.0.1:5555/node1          # bind, wait for node1, DEPLOY
    pat deploy model.pnn --to mqtt://127.0.0.1:1883/node1         # retained on pat/node1/deploy
    pat deploy model.pnn --to fleet --coordinator tcp://127.0.0.1:5555 [--nodes n1,n2] [--wait 5]
    pat deploy --rollback --to mqtt://127.0.0.1:1883/node1 [--version ARTIFACT_ID]
    pat deploy model.pnn --inspect
    pat deploy model.pnn --to fleet --coordinator tcp://127.0.0.1:5555 --calibrate --threshold 0.8   # docs/deploy.md
    pat deploy model.pnn --to fleet --sim-fleet sim:plate --units 1-16 --calibrate                   # simulated units

An unsigned artifact is signed on the way out with ``--sign-key`` (default ``$PAT_HOME/signing.key``, made
by ``pat keys create``); a signed one is sent as it is unless ``--sign-key`` is given. Nodes accept only
artifacts signed by a key in their trusted keys (``pat edge --trusted-keys``; see docs/artifacts.md).

Exit status: 0 when every node confirmed, 1 when any node refused (its reason is printed), 2 for bad usage or
an artifact that fails verification locally.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the `deploy` command to `app`."""

    @app.command("deploy")
    def deploy(
        model: Optional[Path] = typer.Argument(None, help="the .pnn artifact (not needed with --rollback)"),
        to: Optional[str] = typer.Option(None, "--to", help="zmq://HOST:PORT/NODE, mqtt://HOST:PORT/NODE or fleet"),
        coordinator: Optional[str] = typer.Option(None, help="with --to fleet: tcp://HOST:PORT (bind) or "
                                                             "mqtt://HOST:PORT (broker)"),
        nodes: Optional[str] = typer.Option(None, help="with --to fleet: comma-separated node ids (default: all "
                                                       "that join within --wait)"),
        rollback: bool = typer.Option(False, "--rollback", help="roll back to the previous version"),
        version: Optional[str] = typer.Option(None, help="with --rollback: the artifact id to go back to"),
        inspect: bool = typer.Option(False, "--inspect", help="verify MODEL and print its manifest summary"),
        wait: float = typer.Option(10.0, help="seconds to wait for nodes to join"),
        timeout: float = typer.Option(30.0, help="seconds to wait for each node's verdict"),
        calibrate: bool = typer.Option(False, "--calibrate", help="with --to fleet: calibrate on each unit, verify, "
                                                                  "switch only if better (docs/deploy.md)"),
        sim_fleet: Optional[str] = typer.Option(None, help="with --calibrate: simulate the fleet in this process "
                                                           "(sim:KIND, one node per --units)"),
        units: str = typer.Option("1-4", help="with --sim-fleet: unit numbers, e.g. 1-16"),
        serving: Optional[Path] = typer.Option(None, help="with --sim-fleet: install this model first (what "
                                                          "the units serve before the rollout)"),
        calib_task: str = typer.Option("digits", help="with --calibrate: labelled calibration samples from this "
                                                      "task's training split"),
        calib_samples: int = typer.Option(256, help="with --calibrate: labelled samples per unit (half verify)"),
        unlabelled: bool = typer.Option(False, help="with --calibrate: label-free re-normalisation only; switches "
                                                    "unverified"),
        threshold: float = typer.Option(0.0, help="with --calibrate: minimum verified accuracy to switch (0-1)"),
        canaries: int = typer.Option(2, help="with --calibrate: nodes tried first; the rollout stops if one fails"),
        wave: int = typer.Option(0, help="with --calibrate: nodes at once after the canaries (0: all)"),
        max_calls: int = typer.Option(2000, help="with --calibrate: device-call budget per unit"),
        max_seconds: float = typer.Option(120.0, help="with --calibrate: time budget per unit (s)"),
        verify: float = typer.Option(0.5, help="with --calibrate: fraction of the samples held out to verify"),
        report_json: Optional[Path] = typer.Option(None, help="with --calibrate: write the per-unit reports here"),
        sign_key: Optional[Path] = typer.Option(
            None, "--sign-key", help="private key to sign with (default: $PAT_HOME/signing.key when MODEL is "
                                     "unsigned; given explicitly, MODEL is re-signed with it)"),
    ) -> None:
        """Deploy MODEL to the node(s) given by --to (or roll back, or inspect)."""
        from pat_runtime.artifact import ArtifactError, ensure_signed, load_artifact
        from pat_runtime.deployer import DeployError, Target, run_on_target

        data = None
        if not rollback:
            if model is None:
                raise typer.BadParameter("give the .pnn artifact to deploy (or --rollback)")
            try:
                art = load_artifact(model)
            except ArtifactError as e:
                typer.echo(f"error: {model}: {e}", err=True)
                raise typer.Exit(2) from None
            if inspect:
                typer.echo(json.dumps({**art.summary(), "spec": art.manifest["device"]["spec"],
                                       "normalization": art.normalization, "metadata": art.metadata}, indent=1))
                return
            try:
                data = ensure_signed(model.read_bytes(), key_path=sign_key, resign=sign_key is not None)
            except ValueError as e:  # no usable signing key (KeyFileError) or a bad artifact
                typer.echo(f"error: {model}: cannot sign: {e}", err=True)
                raise typer.Exit(2) from None
        if calibrate:
            if rollback or to != "fleet" or model is None:
                raise typer.BadParameter("--calibrate goes with MODEL --to fleet")
            from pat_runtime.cli.deploy_fleet import deploy_calibrated

            deploy_calibrated(model, data, coordinator=coordinator, nodes=[n for n in (nodes or "").split(",") if n],
                              wait=wait, timeout=max(timeout, max_seconds * 2 + 30), sim_fleet=sim_fleet, units=units,
                              serving=serving, calib_task=calib_task, calib_samples=calib_samples,
                              unlabelled=unlabelled, threshold=threshold, canaries=canaries, wave=wave,
                              max_calls=max_calls, max_seconds=max_seconds, verify=verify, report_json=report_json)
            return
        if not to:
            raise typer.BadParameter("--to is required (zmq://HOST:PORT/NODE, mqtt://HOST:PORT/NODE or fleet)")
        try:
            target = Target.parse(to, coordinator, [n for n in (nodes or "").split(",") if n])
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        try:
            results = asyncio.run(run_on_target(target, "rollback" if rollback else "deploy", data, to=version,
                                                wait=wait, timeout=timeout))
        except DeployError as e:
            results = {e.node: e}
        except Exception as e:  # connection problems: say which and exit non-zero
            typer.echo(f"error: {type(e).__name__}: {e}", err=True)
            raise typer.Exit(1) from None
        failed = False
        for node, r in results.items():
            if isinstance(r, DeployError):
                failed = True
                typer.echo(f"{node}: REFUSED {r.code}: {r.message}", err=True)
            else:
                what = "unchanged" if r.get("unchanged") else ("rolled back to" if rollback else "deployed")
                typer.echo(f"{node}: {what} version {r.get('model_version')} ({str(r.get('artifact_id'))[:12]})")
        if failed:
            raise typer.Exit(1)
