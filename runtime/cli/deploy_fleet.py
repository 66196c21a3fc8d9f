"""`pat deploy --to fleet --calibrate`: calibrate, verify, then switch on every unit, canaries first.

    # a fleet of simulated nodes in this process (units 1-16 of sim:plate), serving OLD.pnn first
    pat deploy runs/fleet/model.pnn --to fleet --sim-fleet sim:plate --units 1-16 --serving OLD.pnn \\
        --calibrate --calib-task digits --calib-samples 256 --threshold 0.8 --canaries 2 --max-calls 2000

    # real nodes (pat edge ... --deploy-dir DIR) behind a coordinator
    pat deploy model.pnn --to fleet --coordinator tcp://127.0.0.1:5555 --calibrate --threshold 0.8

Prints one row per unit: accuracy of the serving model, of the candidate as shipped, after label-free
re-normalisation and after PAT calibration (all on the node's held-out calibration samples), device calls,
seconds, and whether the node switched or kept its model (and why). Exit status 1 if the rollout stopped
or a node failed.
"""
from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import typer


def calibration_set(task: str, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` labelled samples drawn from the training split of ``task`` (never its test split)."""
    from pat_runtime.datasets import load_task

    t = load_task(task, seed=seed)
    if samples > len(t.x_train):
        raise ValueError(f"{task} has only {len(t.x_train)} training samples")
    idx = np.random.default_rng(seed + 7).choice(len(t.x_train), samples, replace=False)
    return t.x_train[idx], t.y_train[idx]


async def run_calibrated(data: bytes, cfg, x, y, *, coordinator: str | None, nodes: list[str], wait: float,
                         sim_fleet: str | None, units: str, serving: bytes | None,
                         status_json: Path | None) -> Any:
    from pat_runtime.fleet.rollout import calibrated_rollout

    if sim_fleet:
        from pat_runtime.deployer import deploy_via
        from pat_runtime.fleet.simnodes import calibrating_fleet, parse_units

        with tempfile.TemporaryDirectory(prefix="pat-simfleet-") as tmp:
            async with calibrating_fleet(sim_fleet, parse_units(units), tmp, timeout=cfg.timeout) as fleet:
                if serving is not None:
                    res = await deploy_via(fleet.coordinator, fleet.node_ids, serving)
                    bad = {n: r for n, r in res.items() if isinstance(r, Exception)}
                    if bad:
                        raise RuntimeError(f"could not install the serving model: {bad}")
                return await calibrated_rollout(fleet.coordinator, nodes or fleet.node_ids, data, x, y, cfg)
    from pat_runtime.deployer import Target, _coordinator

    target = Target.parse("fleet", coordinator, nodes)
    coord = _coordinator(target)
    await coord.start()
    try:
        if nodes:
            await asyncio.gather(*(coord.wait_for_node(n, timeout=wait) for n in nodes))
        else:
            await asyncio.sleep(wait)
            nodes = sorted(coord.alive_nodes())
            if not nodes:
                raise RuntimeError(f"no node joined {target.url} within {wait} s")
        return await calibrated_rollout(coord, nodes, data, x, y, cfg)
    finally:
        await coord.close()


def deploy_calibrated(model: Path, data: bytes, *, coordinator, nodes, wait, timeout, sim_fleet, units, serving,
                      calib_task, calib_samples, unlabelled, threshold, canaries, wave, max_calls, max_seconds,
                      verify, report_json) -> None:
    """The body of ``pat deploy --calibrate`` (prints the table; exits 1 on a stopped rollout)."""
    from pat_runtime.artifact import ArtifactError, ensure_signed, load_artifact
    from pat_runtime.calibration import Budget, plan_of
    from pat_runtime.fleet.rollout import RolloutConfig, format_table

    art = load_artifact(model)
    if plan_of(art.metadata) is None:
        typer.echo(f"error: {model} carries no calibration plan (train it with `pat train-fleet`)", err=True)
        raise typer.Exit(2)
    if not sim_fleet and not coordinator:
        raise typer.BadParameter("--calibrate needs --coordinator URL or --sim-fleet sim:KIND")
    try:
        budget = Budget(calls=max_calls, seconds=max_seconds, samples=calib_samples)
        x, y = calibration_set(calib_task, calib_samples)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    cfg = RolloutConfig(threshold=threshold, budget=budget, canaries=canaries, wave=wave, verify=verify,
                        require_verified=not unlabelled, timeout=timeout)
    serving_bytes = None
    if serving is not None:
        try:
            load_artifact(serving)
            serving_bytes = ensure_signed(serving.read_bytes())   # signed like MODEL (pat deploy signs)
        except ValueError as e:  # ArtifactError or no usable signing key
            raise typer.BadParameter(f"--serving {serving}: {e}") from None
    typer.echo(f"calibrated rollout of {model.name} ({art.artifact_id[:12]}): threshold {threshold:.0%}, "
               f"{calib_samples} labelled samples from {calib_task} (half fit, half verify), budget "
               f"{max_calls} device calls / {max_seconds:g} s per unit, {canaries} canary node(s)")
    try:
        result = asyncio.run(run_calibrated(data, cfg, x, None if unlabelled else y, coordinator=coordinator,
                                            nodes=nodes, wait=wait, sim_fleet=sim_fleet, units=units,
                                            serving=serving_bytes, status_json=report_json))
    except (RuntimeError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_table(result))
    if report_json is not None:
        report_json.write_text(json.dumps(result.to_dict(), indent=1))
    switched = sum(o.switched for o in result.outcomes)
    typer.echo(f"{switched}/{len(result.outcomes)} unit(s) switched")
    if not result.ok:
        raise typer.Exit(1)
