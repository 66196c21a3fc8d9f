"""``pat results``: run the PAT / in-silico / SPSA / digital grid and regenerate docs/RESULTS.md.

    pat results                      # the full grid (about 45 min on 2 cores), writes docs/RESULTS.md,
                                     # docs/results.json, docs/results_depth.png, docs/results_gap.png
    pat results --render-only        # re-render RESULTS.md and the figures from docs/results.json
    pat results --resume             # continue an interrupted grid (same options): finished runs are kept
                                     # (docs/results_runs.jsonl), fitted twins reused (docs/results_twins/)

The grid (:mod:`pat_runtime.results.grid`): devices × hardware units × seeds × depths for PAT and in-silico
training with the best fitted twin, SPSA (gains tuned on validation) at the SPSA depths, digital baselines,
and optionally hybrid PAT vs digital on mnist5k. Every result is selected on validation; cells report the
mean and 95 % t-interval of test accuracy over seeds × units (:mod:`pat_runtime.results.render`).
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import typer

DEFAULT_OUT = Path("docs/RESULTS.md")


def _ints(s: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {s!r}") from None
    if not vals:
        raise typer.BadParameter("expected at least one value")
    return vals


#: spec fields that may differ between an interrupted grid and its resumption
_RESUME_FREE = {"runs_log", "twin_cache", "workers"}


def _resume_state(state_file: Path, runs_log: Path, spec) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """``(runs, spsa_tuning, started)`` of the interrupted grid beside ``--out`` (same options required)."""
    if not state_file.exists() or not runs_log.exists():
        raise ValueError(f"--resume: no interrupted grid here ({state_file} / {runs_log} missing)")
    state = json.loads(state_file.read_text())
    if not state.get("partial"):
        raise ValueError(f"--resume: {state_file} holds a finished grid; run without --resume")
    old, new = state.get("spec", {}), spec.to_dict()
    diff = sorted(k for k in new if k not in _RESUME_FREE and json.loads(json.dumps(old.get(k))) !=
                  json.loads(json.dumps(new[k])))
    if diff:
        raise ValueError(f"--resume: options differ from the interrupted grid ({', '.join(diff)}); "
                                 f"use the same options (its command: {state.get('command')})")
    runs = [json.loads(line) for line in runs_log.read_text().splitlines() if line.strip()]
    return runs, state.get("spsa_tuning") or {}, float(state.get("started") or time.time())


def write_report(data: dict[str, Any], out: Path, command: str) -> None:
    """RESULTS.md, results.json and the depth/gap figures beside ``out``."""
    from pat_runtime.plots import plot_depth, plot_gap
    from pat_runtime.results.render import TARGET_GAP, cells, gaps, render

    out.parent.mkdir(parents=True, exist_ok=True)
    data = {**data, "command": command}
    (out.parent / "results.json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    out.write_text(render(data, command))
    acc = cells(data["runs"])
    depth_table: dict[str, dict[str, list]] = {}
    for (dev, m, k), iv in acc.items():
        name = "digital" if m == "digital" else m
        for d in ([dev] if dev != "digital" else [x for x in {r["device"] for r in data["runs"]} if x != "digital"]):
            depth_table.setdefault(d, {}).setdefault(name, []).append((k, iv.mean, iv.lo, iv.hi))
    plot_depth(depth_table, out.parent / "results_depth.png",
               title=f"{data['spec']['task']}: test accuracy on the device (95 % t-intervals)")
    gap_table: dict[str, list] = {}
    for (dev, k), iv in gaps(data["runs"]).items():
        gap_table.setdefault(dev, []).append((k, iv.mean, iv.lo, iv.hi))
    plot_gap(gap_table, out.parent / "results_gap.png", title="PAT − in-silico (best fitted twin)", target=TARGET_GAP)


def register(app: typer.Typer) -> None:
    @app.command("results")
    def results(
        out: Path = typer.Option(DEFAULT_OUT, help="markdown file to write (results.json and plots beside it)"),
        device: list[str] = typer.Option(["plate", "shg"], "--device", "-d", help="simulator kinds (repeatable)"),
        units: str = typer.Option("0,1", help="hardware units (sim ?unit=), comma-separated"),
        seeds: int = typer.Option(4, min=1, help="number of seeds (0..N-1)"),
        depths: str = typer.Option("1,2,3,4", help="physical layers, comma-separated"),
        epochs: int = typer.Option(30, min=1, help="epochs per PAT / in-silico / digital run"),
        spsa_epochs: int = typer.Option(15, min=1, help="epochs per SPSA run"),
        spsa_depths: str = typer.Option("1", help="depths at which SPSA runs (comma-separated; '' = none)"),
        batch: int = typer.Option(64, min=1, help="batch size"),
        n_train: int | None = typer.Option(None, min=20, help="training samples per seed before the validation "
                                           "split (default: the task's whole training split)"),
        spsa_a: str = typer.Option("0.25,0.5,1", help="SPSA step-gain candidates tuned on validation "
                                   "(one value: fixed, no tuning)"),
        twin: str = typer.Option("best", help="twin for PAT and in-silico: best (lowest held-out NMSE) or a kind"),
        twin_samples: int = typer.Option(16384, min=64, help="measurements for the best-twin fit (per device, unit)"),
        twin_epochs: int = typer.Option(30, min=1, help="epochs per twin candidate"),
        task: str = typer.Option("digits", help="task"),
        sim_options: str = typer.Option("", help="extra sim options for every device, e.g. 'noise=0.02'"),
        hybrid: bool = typer.Option(True, "--hybrid/--no-hybrid", help="also hybrid PAT vs digital on mnist5k"),
        workers: int = typer.Option(2, min=1, max=8, help="worker processes"),
        render_only: bool = typer.Option(False, "--render-only", help="re-render from results.json, no training"),
        resume: bool = typer.Option(False, "--resume", help="continue an interrupted grid with the same options: "
                                    "keep the runs in results_runs.jsonl beside --out and run only the missing ones"),
        twin_cache: Path | None = typer.Option(None, help="folder for the fitted best twins (one per device and "
                                               "unit; reused by --resume); default: results_twins/ beside --out, "
                                               "removed when the grid finishes"),
    ) -> None:
        """Run the method comparison grid and regenerate docs/RESULTS.md (+ results.json and figures)."""
        from pat_runtime.results.grid import GridSpec, run_grid, run_hybrid

        if render_only:
            src = out.parent / "results.json"
            if not src.exists():
                typer.echo(f"error: {src} does not exist; run `pat results` first", err=True)
                raise typer.Exit(2)
            data = json.loads(src.read_text())
            log = out.parent / "results_runs.jsonl"
            if data.get("partial") and log.exists():     # an interrupted grid: every run finished so far
                data["runs"] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                if data.get("started"):
                    data["seconds"] = log.stat().st_mtime - data["started"]
            write_report(data, out, data.get("command", "pat results"))
            typer.echo(f"re-rendered {out} from {src}" + (" (partial grid)" if data.get("partial") else ""))
            return
        spec = GridSpec(devices=list(device), units=_ints(units), seeds=tuple(range(seeds)), depths=_ints(depths),
                        spsa_depths=_ints(spsa_depths) if spsa_depths.strip() else (), task=task, epochs=epochs,
                        spsa_epochs=spsa_epochs, batch=batch, twin=twin, sim_options=sim_options,
                        twin_samples=twin_samples, twin_epochs=twin_epochs, n_train=n_train,
                        spsa_a_grid=tuple(float(v) for v in spsa_a.split(",") if v.strip()))
        cmd = ["pat results"]
        defaults = GridSpec()
        if out != DEFAULT_OUT:
            cmd.append(f"--out {out}")
        if list(device) != defaults.devices:
            cmd += [f"--device {d}" for d in device]
        for name, val, dflt in [("units", spec.units, defaults.units), ("seeds", seeds, 4),
                                ("depths", spec.depths, defaults.depths), ("epochs", epochs, defaults.epochs),
                                ("spsa-epochs", spsa_epochs, defaults.spsa_epochs),
                                ("spsa-depths", spec.spsa_depths, defaults.spsa_depths), ("batch", batch, 64),
                                ("twin", twin, "best"), ("twin-samples", twin_samples, defaults.twin_samples),
                                ("twin-epochs", twin_epochs, defaults.twin_epochs), ("task", task, "digits"), ("sim-options", sim_options, ""),
                                ("workers", workers, 2), ("n-train", n_train, None),
                                ("spsa-a", spsa_a, "0.25,0.5,1")]:
            if val != dflt:
                v = ",".join(map(str, val)) if isinstance(val, tuple) else val
                cmd.append(f"--{name} '{v}'" if name == "sim-options" or v == "" else f"--{name} {v}")
        if not hybrid:
            cmd.append("--no-hybrid")
        t0 = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        runs_log = out.parent / "results_runs.jsonl"
        state_file = out.parent / "results.json"
        twin_dir = twin_cache or out.parent / "results_twins"
        previous: list[dict[str, Any]] = []
        tuning: dict[str, Any] = {}
        started = time.time()
        if resume:
            try:
                previous, tuning, started = _resume_state(state_file, runs_log, spec)
            except ValueError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2) from None
            typer.echo(f"resuming: {len(previous)} runs already done")
        else:
            runs_log.write_text("")
        spec.runs_log = str(runs_log.resolve())
        spec.twin_cache = str(twin_dir)
        t = spec.load(0)
        task_sizes = {"n_train": t.n_train, "n_val": t.n_val, "n_test": t.n_test}
        start = {"spec": {**spec.to_dict(), "workers": workers, "runs_log": None, "twin_cache": None}, "runs": [],
                 "spsa_tuning": tuning, "task": task_sizes, "partial": True, "seconds": 0.0, "started": started,
                 "command": " ".join(cmd),
                 "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"}
        state_file.write_text(json.dumps(start, indent=1) + "\n")

        def save_tuning(tn: dict[str, Any]) -> None:
            state_file.write_text(json.dumps({**start, "spsa_tuning": tn}, indent=1, default=float) + "\n")

        data = run_grid(spec, workers=workers, log=typer.echo, previous=previous, tuning=tuning,
                        on_tuning=save_tuning)
        if hybrid:
            data["hybrid"] = run_hybrid(spec, workers=workers, log=typer.echo)
        data["task"] = task_sizes
        data["partial"] = False
        data["spec"].update(workers=workers, runs_log=None, twin_cache=None)
        if twin_cache is None:
            shutil.rmtree(twin_dir, ignore_errors=True)
        data["machine"] = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
        data["seconds"] = time.time() - started if resume else time.perf_counter() - t0
        write_report(data, out, " ".join(cmd))
        runs_log.unlink(missing_ok=True)
        typer.echo(f"wrote {out} ({data['seconds'] / 60:.1f} min)")
