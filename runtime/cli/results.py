"""``pat results``: run the method comparison and regenerate docs/RESULTS.md (+ docs/results.png).

For each simulated device and seed it trains, on the same task, data order and architecture:

* ``digital``            — a digital MLP of the same widths (no device),
* ``insilico/nominal``   — in-silico training with the datasheet (nominal physics) twin,
* ``pat/nominal``        — PAT with that same nominal twin in the backward pass,
* ``insilico/<fitted>``  — in-silico training with a twin fitted to the device's measurements,
* ``pat/<fitted>``       — PAT with that fitted twin,
* ``spsa``               — in-situ SPSA (no twin in training),

and reports the *final-epoch* physical test accuracy (mean ± std over seeds), each twin's held-out NMSE
against fresh measurements, and timings. Nothing is selected on the test set.
"""
from __future__ import annotations

import asyncio
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

#: (method, twin) variants in table order
VARIANTS: list[tuple[str, str]] = [("digital", "-"), ("insilico", "nominal"), ("pat", "nominal"),
                                   ("insilico", "greybox"), ("pat", "greybox"), ("spsa", "-")]
DEVICES = ["sim:plate", "sim:shg", "sim:sensor"]


@dataclass
class Grid:
    devices: list[str]
    task: str = "digits"
    seeds: tuple[int, ...] = (0, 1)
    epochs: int = 30
    batch: int = 64
    layers: int = 2
    fitted: str = "greybox"
    spsa_epochs: int | None = None

    def variants(self) -> list[tuple[str, str]]:
        return [(m, self.fitted if t == "greybox" else t) for m, t in VARIANTS]


def _label(method: str, twin: str) -> str:
    return method if twin == "-" else f"{method}/{twin}"


async def run_grid(grid: Grid, runs_dir: Path | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train every (device, variant, seed); returns one record per run."""
    import torch

    from runtime.datasets import load_task
    from runtime.trainers.run import ExperimentConfig, run_experiment

    torch.set_num_threads(1)
    records: list[dict[str, Any]] = []
    total = len(grid.devices) * len(grid.variants()) * len(grid.seeds)
    k = 0
    for seed in grid.seeds:
        task = load_task(grid.task, seed=seed)
        for dev in grid.devices:
            for method, twin in grid.variants():
                k += 1
                epochs = grid.spsa_epochs if (method == "spsa" and grid.spsa_epochs) else grid.epochs
                cfg = ExperimentConfig(device=dev, task=grid.task, method=method,
                                       twin="nominal" if twin == "-" else twin, epochs=epochs, batch=grid.batch,
                                       layers=grid.layers, seed=seed)
                out = runs_dir / f"{dev.replace(':', '_')}-{_label(method, twin).replace('/', '-')}-s{seed}" \
                    if runs_dir else None
                t0 = time.perf_counter()
                r = await run_experiment(cfg, task=task, out=out)
                s = r.summary
                rec = {"device": dev, "method": method, "twin": twin, "seed": seed, "epochs": epochs,
                       "test_acc": s["test_acc"], "twin_test_acc": s["twin_test_acc"],
                       "twin_nmse": (s["twin"] or {}).get("nmse_val") if twin != "-" else None,
                       "noise_floor": (s["twin"] or {}).get("noise_floor") if twin != "-" else None,
                       "train_s": s["train_s"], "total_s": time.perf_counter() - t0,
                       "device_calls": s["device_calls"], "samples_per_s": s["samples_per_s"],
                       "parameters": s["parameters"], "command": s["command"],
                       "history": [m.to_dict() for m in r.history]}
                records.append(rec)
                if progress:
                    typer.echo(f"[{k}/{total}] {dev:12s} {_label(method, twin):18s} seed {seed}: "
                               f"test acc {rec['test_acc']:.3f} ({rec['total_s']:.1f} s)")
    return records


TWIN_KINDS = ["nominal", "greybox", "residual", "mlp"]


async def twin_table(devices: list[str], seed: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Held-out NMSE of every twin kind on each device (default data sizes and epochs of each kind)."""
    import torch

    from devices.factory import make_device
    from runtime.twins import DEFAULTS, build_twin

    torch.set_num_threads(1)
    rows = []
    for dev_uri in devices:
        dev = make_device(dev_uri)
        await dev.connect()
        try:
            for kind in TWIN_KINDS:
                t0 = time.perf_counter()
                _, rep, _ = await build_twin(dev, kind, seed=seed)
                rows.append({"device": dev_uri, "kind": kind, "n_samples": DEFAULTS[kind]["n_samples"],
                             "nmse_val": rep.nmse_val, "noise_floor": rep.noise_floor, "epochs": rep.epochs,
                             "seconds": time.perf_counter() - t0})
                if progress:
                    typer.echo(f"twin {dev_uri:12s} {kind:9s}: held-out NMSE {rep.nmse_val:.4f} "
                               f"(floor {rep.noise_floor:.4f}, {rows[-1]['seconds']:.1f} s)")
        finally:
            await dev.close()
    return rows


def render_twins(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    devices = list(dict.fromkeys(r["device"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    by = {(r["device"], r["kind"]): r for r in rows}
    lines = ["", "## Twin quality", "",
             "Held-out NMSE = mean‖f_m(x, θ) − y‖² / mean‖y − ȳ‖² on random (x, θ) batches not used for fitting "
             "(`pat twin --device DEVICE --kind KIND`, default sizes; seed 0). The noise floor is what a perfect "
             "twin would score against single noisy measurements (estimated from repeated measurements).", "",
             "| device | " + " | ".join(f"{k} (n={by[(devices[0], k)]['n_samples']})" for k in kinds)
             + " | noise floor |", "|---|" + "---|" * (len(kinds) + 1)]
    for d in devices:
        cells = [f"{by[(d, k)]['nmse_val']:.4f} ({by[(d, k)]['seconds']:.0f} s)" for k in kinds]
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {by[(d, kinds[0])]['noise_floor']:.4f} |")
    return lines


def _ms(vals: list[float]) -> str:
    if not vals:
        return "—"
    m = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * sd:.1f}"


def render(records: list[dict[str, Any]], grid: Grid, command: str, seconds: float,
           twins: list[dict[str, Any]] | None = None) -> tuple[str, dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The RESULTS.md text for ``records``, plus the mean and std accuracy per (device, variant)."""
    labels = [_label(m, t) for m, t in grid.variants()]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["device"], _label(r["method"], r["twin"])), []).append(r)
    fitted = grid.fitted
    lines = [
        "# Results: PAT vs in-silico vs SPSA vs digital",
        "",
        f"Generated by `{command}` ({seconds / 60:.1f} min on {platform.machine()} with "
        f"torch.set_num_threads(1)). Do not edit by hand.",
        "",
        f"Task **{grid.task}** (sklearn 8×8 digits, 1347 train / 450 test, stratified split per seed); "
        f"seeds {', '.join(map(str, grid.seeds))}; {grid.epochs} epochs "
        + (f"({grid.spsa_epochs} for SPSA) " if grid.spsa_epochs else "")
        + f"of batch {grid.batch}, Adam; physical-only PNNs with {grid.layers} physical layers on one device "
        "(`runtime.pat.build_pnn`, `hybrid=False`: trainable elementwise input/inter-layer rescaling, θ per "
        "channel, fixed bin-sum readout with per-class scale). Every simulated device has hidden unit-to-unit "
        "parameter variation, noise and DAC/ADC quantization (default options, unit 0).",
        "",
        "Accuracy = **final-epoch test accuracy measured on the device** (mean ± std over seeds, %). "
        "`digital` is a digital MLP of the same widths (more parameters; no device).",
        "",
        "Which twin each method used:",
        "",
        "* `insilico/nominal`, `pat/nominal`: the **nominal** twin = the simulator's physics with datasheet "
        "parameters (`NominalTwin`), never fitted — the reality gap is the hidden unit variation.",
        f"* `insilico/{fitted}`, `pat/{fitted}`: a **{fitted}** twin fitted to the device "
        "(`pat twin --kind " + fitted + "`: physics with learnable calibration, fitted on fresh random "
        "measurements before training).",
        "* `spsa`: no twin in training (perturbative, 2 device evaluations per step).",
        "",
        "| device | " + " | ".join(labels) + " | nominal twin NMSE | " + fitted + " twin NMSE | noise floor |",
        "|---|" + "---|" * (len(labels) + 3),
    ]
    groups: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, float]] = {}
    for dev in grid.devices:
        cells = []
        groups[dev] = {}
        errors[dev] = {}
        for lab in labels:
            accs = [r["test_acc"] for r in by.get((dev, lab), [])]
            cells.append(_ms(accs))
            if accs:
                groups[dev][lab] = statistics.fmean(accs)
                errors[dev][lab] = statistics.stdev(accs) if len(accs) > 1 else 0.0
        nom = [r["twin_nmse"] for r in by.get((dev, "pat/nominal"), []) if r["twin_nmse"] is not None]
        fit = [r["twin_nmse"] for r in by.get((dev, f"pat/{fitted}"), []) if r["twin_nmse"] is not None]
        floor = [r["noise_floor"] for r in by.get((dev, f"pat/{fitted}"), []) if r["noise_floor"] is not None]
        fmt = lambda v: f"{statistics.fmean(v):.4f}" if v else "—"  # noqa: E731
        lines.append(f"| {dev} | " + " | ".join(cells) + f" | {fmt(nom)} | {fmt(fit)} | {fmt(floor)} |")
    lines += ["", "PAT minus in-silico, same twin (accuracy points, mean over seeds):", "",
              "| device | nominal twin | " + fitted + " twin |", "|---|---|---|"]
    for dev in grid.devices:
        g = groups[dev]
        d1 = 100 * (g.get("pat/nominal", float("nan")) - g.get("insilico/nominal", float("nan")))
        d2 = 100 * (g.get(f"pat/{fitted}", float("nan")) - g.get(f"insilico/{fitted}", float("nan")))
        lines.append(f"| {dev} | {d1:+.1f} | {d2:+.1f} |")
    big = [d for d in grid.devices
           if groups[d].get("pat/nominal", 0) - groups[d].get("insilico/nominal", 1) >= 0.10]
    fgap = [100 * (groups[d].get(f"pat/{fitted}", float("nan")) - groups[d].get(f"insilico/{fitted}", float("nan")))
            for d in grid.devices]
    lines += ["", "Reading: with the nominal (datasheet) twin, PAT beats in-silico training by >= 10 points on "
              + (", ".join(big) if big else "no device") + f"; with the fitted {fitted} twin the PAT − in-silico "
              f"difference ranges from {min(fgap):+.1f} to {max(fgap):+.1f} points. PAT's forward pass is the "
              "measurement, so it tolerates a wrong twin; in-silico training is only as good as its twin.", ""]
    lines += ["", "What the twin *predicted* the accuracy would be (in-silico forward of the final model, %) vs "
              "the device:", "", "| device | method | twin-predicted | measured |", "|---|---|---|---|"]
    for dev in grid.devices:
        for lab in labels:
            rs = by.get((dev, lab), [])
            tw = [r["twin_test_acc"] for r in rs if r["twin_test_acc"] is not None]
            if tw and not lab.startswith("digital"):
                lines.append(f"| {dev} | {lab} | {_ms(tw)} | {_ms([r['test_acc'] for r in rs])} |")
    lines += ["", "Cost per run (mean over seeds): training wall time (s) / device calls during training "
              "(evaluation included; twin-fitting measurements excluded):", "",
              "| device | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for dev in grid.devices:
        cells = []
        for lab in labels:
            rs = by.get((dev, lab), [])
            if rs:
                cells.append(f"{statistics.fmean(r['train_s'] for r in rs):.1f} s / "
                             f"{statistics.fmean(r['device_calls'] for r in rs):.0f}")
            else:
                cells.append("—")
        lines.append(f"| {dev} | " + " | ".join(cells) + " |")
    lines += ["", "Reproduce one cell, e.g.:", "", "```bash"]
    seen = set()
    for r in records:
        lab = _label(r["method"], r["twin"])
        if r["device"] == grid.devices[0] and r["seed"] == grid.seeds[0] and lab not in seen:
            seen.add(lab)
            lines.append(r["command"])
    lines += ["```", "", "![accuracy per device and method](results.png)", "",
              f"![training curves of PAT on {grid.devices[0]}](results_curves.png)"]
    lines += render_twins(twins or [])
    lines.append("")
    return "\n".join(lines), groups, errors


def register(app: typer.Typer) -> None:
    @app.command("results")
    def results(
        out: Path = typer.Option(Path("docs/RESULTS.md"), help="markdown file to write (plots beside it)"),
        device: list[str] = typer.Option(DEVICES, "--device", "-d", help="devices to compare (repeatable)"),
        task: str = typer.Option("digits", help="task name (runtime.datasets)"),
        seeds: int = typer.Option(2, min=1, help="number of seeds (0..N-1)"),
        epochs: int = typer.Option(30, min=1, help="epochs per run"),
        spsa_epochs: int | None = typer.Option(None, min=1, help="epochs for SPSA (default: same)"),
        batch: int = typer.Option(64, min=1, help="batch size"),
        layers: int = typer.Option(2, min=1, help="physical layers"),
        fitted: str = typer.Option("greybox", help="kind of fitted twin: greybox|residual|mlp"),
        runs: Path | None = typer.Option(None, help="also keep every run's outputs under this folder"),
        twins: bool = typer.Option(True, "--twins/--no-twins", help="also tabulate every twin kind's held-out NMSE"),
    ) -> None:
        """Run the PAT / in-silico / SPSA / digital comparison and regenerate docs/RESULTS.md."""
        from runtime.plots import plot_comparison, plot_curves

        grid = Grid(devices=list(device), task=task, seeds=tuple(range(seeds)), epochs=epochs, batch=batch,
                    layers=layers, fitted=fitted, spsa_epochs=spsa_epochs)
        cmd = ["pat results"]
        if out != Path("docs/RESULTS.md"):
            cmd.append(f"--out {out}")
        if list(device) != DEVICES:
            cmd += [f"--device {d}" for d in device]
        for name, val, default in [("task", task, "digits"), ("seeds", seeds, 2), ("epochs", epochs, 30),
                                   ("spsa-epochs", spsa_epochs, None), ("batch", batch, 64),
                                   ("layers", layers, 2), ("fitted", fitted, "greybox")]:
            if val != default:
                cmd.append(f"--{name} {val}")
        if not twins:
            cmd.append("--no-twins")
        t0 = time.perf_counter()
        records = asyncio.run(run_grid(grid, runs))
        twin_rows = asyncio.run(twin_table(list(device))) if twins else []
        seconds = time.perf_counter() - t0
        text, groups, errors = render(records, grid, " ".join(cmd), seconds, twin_rows)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        plot_comparison(groups, out.parent / "results.png", title=f"{task}: physical test accuracy", errors=errors)
        first = [r for r in records if r["device"] == grid.devices[0] and r["seed"] == grid.seeds[0]]
        for r in first:
            if r["method"] == "pat" and r["twin"] == "nominal":
                plot_curves(r["history"], out.parent / "results_curves.png",
                            title=f"PAT (nominal twin) on {r['device']} / {task}")
        (out.parent / "results.json").write_text(json.dumps(
            {"runs": [{k: v for k, v in r.items() if k != "history"} for r in records], "twins": twin_rows},
            indent=1) + "\n")
        typer.echo(f"wrote {out} ({seconds / 60:.1f} min)")
