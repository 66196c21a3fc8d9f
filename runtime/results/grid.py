"""The experiment grid behind ``pat results``: devices x hardware units x seeds x depths x methods.

One *job* is one ``(device, unit)``: it connects ``sim:DEVICE?unit=U``, fits the **best twin** once
(:func:`best_twin` -> :func:`pat_runtime.twins.fit_best_twin`: every candidate kind fitted on the same fresh
measurements, the lowest validation NMSE wins; twin data seed ``twin_seed``) and, for every seed, trains
every depth with PAT and in-silico training on that same twin, plus SPSA (gains tuned on validation by
:func:`pat_runtime.trainers.spsa_tune.tune_spsa`) at the SPSA depths. Digital baselines need no device: one
job per seed. Jobs run in a process pool (``workers``, each with one torch thread).

Every run uses the task's train / validation / test split of its seed: the model of the epoch with the
best validation accuracy is the result and the test split is measured once, for that model
(``eval_test="final"``). A record per run holds the selected model's ``val_acc`` and ``test_acc`` and
everything needed to tell the cells apart (see :func:`run_job`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

@dataclass
class GridSpec:
    devices: list[str] = field(default_factory=lambda: ["plate", "shg"])
    units: tuple[int, ...] = (0, 1)
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    methods: tuple[str, ...] = ("pat", "insilico", "spsa", "digital")
    spsa_depths: tuple[int, ...] = (1,)
    task: str = "digits"
    epochs: int = 30
    spsa_epochs: int = 15
    batch: int = 64
    val_fraction: float = 0.2
    #: training samples per seed before the validation split (None: the task's whole training split)
    n_train: int | None = None
    #: append every finished run's record to this JSON-lines file (partial results survive an interrupt)
    runs_log: str | None = None
    #: folder where each (device, unit)'s best twin is saved by the first job and loaded by the others
    #: (None: jobs are whole (device, unit) rows and fit their own twin)
    twin_cache: str | None = None
    #: "best" = fit every candidate kind and keep the lowest validation NMSE; or one kind
    twin: str = "best"
    #: rows and epochs of the best-twin fit (None: pat_runtime.twins.DEFAULTS, minutes per fit on 2 cores)
    twin_samples: int | None = 16384
    twin_epochs: int | None = 30
    twin_seed: int = 0
    #: SPSA (a, c) candidates tuned on validation (unit 0, seed 0, first SPSA depth) per device
    spsa_a_grid: tuple[float, ...] = (0.25, 0.5, 1.0)
    spsa_c: float = 0.2
    spsa_tune_epochs: int = 3
    #: extra sim options appended to every device URI (e.g. "noise=0.02")
    sim_options: str = ""
    #: hybrid PAT (digital input/output layers around the device) vs digital of the same widths
    hybrid_task: str = "mnist5k"
    hybrid_device: str = "plate"
    hybrid_layers: int = 1
    hybrid_channels: int = 2
    hybrid_lr: float = 0.01
    hybrid_epochs: int = 30
    hybrid_twin: str = "greybox"

    def uri(self, device: str, unit: int) -> str:
        opts = f"unit={unit}" + (f"&{self.sim_options}" if self.sim_options else "")
        return f"sim:{device}?{opts}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load(self, seed: int):
        """The task of ``seed`` with its train / validation / test split."""
        from pat_runtime.datasets import load_task, with_validation

        return with_validation(load_task(self.task, seed=seed, n_train=self.n_train), self.val_fraction, seed=seed)

    def log_run(self, rec: dict[str, Any]) -> None:
        if self.runs_log:
            import json

            with open(self.runs_log, "a") as f:
                f.write(json.dumps(rec, default=float) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GridSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) and k != "devices" else v) for k, v in d.items() if k in names}
        return cls(**kw)


async def best_twin(device, seed: int, kind: str = "best", n_samples: int | None = None,
                    epochs: int | None = None):
    """``(twin, report, info)``: the best fitted twin of ``device`` (:func:`pat_runtime.twins.fit_best_twin`:
    every candidate kind fitted on the same fresh measurements, lowest *validation* NMSE chosen), or
    one ``kind``. ``info`` holds the chosen kind, its held-out (test-row) NMSE, the noise floor and
    every candidate's held-out NMSE."""
    from pat_runtime.twins import build_twin

    twin, rep, data = await build_twin(device, kind, n_samples=n_samples, epochs=epochs, seed=seed)
    cands = {k: c.get("nmse_test", c.get("nmse_val")) for k, c in (rep.candidates or {}).items()} \
        or {rep.kind: rep.nmse_heldout}
    return twin, rep, {"kind": rep.kind, "nmse_val": rep.nmse_heldout, "noise_floor": rep.noise_floor,
                       "candidates": cands, "n_samples": len(data)}


def _record(spec: GridSpec, device: str, unit: int | None, seed: int, depth: int, method: str, summary: dict,
            twin_info: dict | None, seconds: float, extra: dict | None = None) -> dict[str, Any]:
    sel = summary.get("selected") or {}
    return {"device": device, "unit": unit, "seed": seed, "depth": depth, "method": method,
            "twin": None if twin_info is None or method in ("digital",) else twin_info["kind"],
            "twin_nmse": None if twin_info is None else twin_info["nmse_val"],
            "noise_floor": None if twin_info is None else twin_info["noise_floor"],
            "val_acc": summary["val_acc"], "test_acc": summary["test_acc"],
            "twin_test_acc": summary.get("twin_test_acc"), "twin_val_acc": sel.get("twin_val_acc"),
            "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
            "train_s": summary["train_s"], "seconds": seconds, "device_calls": summary["device_calls"],
            "parameters": summary["parameters"], "command": summary["command"],
            "warnings": summary.get("warnings", []), **(extra or {})}


async def _unit_twin(spec: GridSpec, dev, device: str, unit: int, log):
    """The best twin of ``(device, unit)``: fitted by the first job that needs it, loaded by the others
    (a file lock in ``spec.twin_cache`` makes sure it is fitted once)."""
    import fcntl
    import json
    from pathlib import Path

    from pat_runtime.twins import load_twin, save_twin

    if not spec.twin_cache:
        t0 = time.perf_counter()
        twin, rep, info = await best_twin(dev, spec.twin_seed, spec.twin, spec.twin_samples, spec.twin_epochs)
        info["seconds"] = time.perf_counter() - t0
        return twin, rep, info
    cache = Path(spec.twin_cache)
    cache.mkdir(parents=True, exist_ok=True)
    stem = cache / f"{device}-unit{unit}"
    with open(f"{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # blocks the event loop on purpose: nothing else runs here
        try:
            if Path(f"{stem}.json").exists():
                info = json.loads(Path(f"{stem}.json").read_text())
                return load_twin(f"{stem}.pt"), None, info
            t0 = time.perf_counter()
            twin, rep, info = await best_twin(dev, spec.twin_seed, spec.twin, spec.twin_samples, spec.twin_epochs)
            info["seconds"] = time.perf_counter() - t0
            save_twin(twin, f"{stem}.pt")
            Path(f"{stem}.json").write_text(json.dumps(info, default=float))
            log(f"sim:{device}?unit={unit}: best twin {info['kind']} (held-out NMSE {info['nmse_val']:.4f}, floor "
                f"{info['noise_floor']:.4f}; candidates "
                f"{', '.join(f'{k} {v:.4f}' for k, v in info['candidates'].items())}; {info['seconds']:.0f} s)")
            return twin, rep, info
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_key(rec: dict[str, Any]) -> tuple:
    """What identifies one run of the grid (a resumed grid skips the keys it already has)."""
    return (rec["device"], rec.get("unit"), int(rec["seed"]), int(rec["depth"]), rec["method"],
            bool(rec.get("hybrid", False)))


def _device_runs(spec: GridSpec, device: str, unit: int, seeds: Iterable[int],
                 depths: Iterable[int] | None = None) -> list[tuple[int, int, str]]:
    """``(seed, depth, method)`` of every device run of one ``(device, unit)`` (at ``depths``, default all), in
    the order they run."""
    return [(seed, depth, method) for seed in seeds for depth in (depths or spec.depths)
            for method in ("pat", "insilico", "spsa")
            if method in spec.methods and not (method == "spsa" and depth not in spec.spsa_depths)]


def depth_priority(depths: Iterable[int]) -> list[int]:
    """The order a cached-twin grid runs depths in: the deepest first (the cells the targets are about), then
    the others from 1 up, so an interrupted grid has its headline cells complete."""
    ds = sorted(set(depths))
    return ds[-1:] + ds[:-1]


async def _device_job(spec: GridSpec, device: str, unit: int, seeds: tuple[int, ...], spsa: dict[str, float] | None,
                      log: Callable[[str], None], done: frozenset = frozenset(),
                      depths: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
    from pat_runtime.devices.factory import make_device
    from pat_runtime.trainers.run import ExperimentConfig, run_experiment

    todo = [r for r in _device_runs(spec, device, unit, seeds, depths) if (device, unit, *r, False) not in done]
    if not todo:
        return []
    uri = spec.uri(device, unit)
    dev = make_device(uri)
    await dev.connect()
    out: list[dict[str, Any]] = []
    try:
        twin, rep, info = await _unit_twin(spec, dev, device, unit, log)
        tasks: dict[int, Any] = {}
        for seed, depth, method in todo:
            if seed not in tasks:
                tasks = {seed: spec.load(seed)}
            task = tasks[seed]
            gains = {"spsa_a": spsa["a"], "spsa_c": spsa["c"]} if method == "spsa" and spsa else {}
            cfg = ExperimentConfig(device=uri, task=spec.task, method=method, twin=spec.twin,
                                   twin_samples=spec.twin_samples, twin_epochs=spec.twin_epochs,
                                   epochs=spec.spsa_epochs if method == "spsa" else spec.epochs,
                                   batch=spec.batch, layers=depth, seed=seed,
                                   val_fraction=spec.val_fraction, eval_test="final", **gains)
            t1 = time.perf_counter()
            r = await run_experiment(cfg, task=task, device=dev, twin=twin, twin_report=rep)
            rec = _record(spec, device, unit, seed, depth, method, r.summary, info,
                          time.perf_counter() - t1,
                          {"twin_candidates": info["candidates"], "twin_fit_s": info["seconds"], **gains})
            out.append(rec)
            spec.log_run(rec)
            log(f"{uri} seed {seed} depth {depth} {method}: val {rec['val_acc']:.3f} "
                f"test {rec['test_acc']:.3f} ({rec['seconds']:.0f} s)")
    finally:
        await dev.close()
    return out


async def _digital_job(spec: GridSpec, seed: int, log, done: frozenset = frozenset()) -> list[dict[str, Any]]:
    from pat_runtime.devices.factory import make_device
    from pat_runtime.trainers.run import ExperimentConfig, run_experiment

    depths = [d for d in spec.depths if ("digital", None, seed, d, "digital", False) not in done]
    if not depths:
        return []
    task = spec.load(seed)
    out = []
    for depth in depths:
        # the same widths as the PNN on the first device (channels x in_dim)
        cfg = ExperimentConfig(device=spec.uri(spec.devices[0], 0), task=spec.task, method="digital",
                               epochs=spec.epochs, batch=spec.batch, layers=depth, seed=seed,
                               val_fraction=spec.val_fraction, eval_test="final")
        dev = make_device(cfg.device)
        await dev.connect()        # only for its spec (widths); the digital net never calls it
        try:
            t1 = time.perf_counter()
            r = await run_experiment(cfg, task=task, device=dev)
        finally:
            await dev.close()
        out.append(_record(spec, "digital", None, seed, depth, "digital", r.summary, None, time.perf_counter() - t1))
        spec.log_run(out[-1])
        log(f"digital seed {seed} depth {depth}: val {r.summary['val_acc']:.3f} test {r.summary['test_acc']:.3f}")
    return out


async def _tune_job(spec: GridSpec, device: str, log) -> dict[str, Any]:
    from pat_runtime.trainers.run import ExperimentConfig
    from pat_runtime.trainers.spsa_tune import tune_spsa

    # SPSA never uses a twin (its rescalings are calibrated on the device): the unfitted nominal one is enough
    cfg = ExperimentConfig(device=spec.uri(device, spec.units[0]), task=spec.task, method="spsa", twin="nominal",
                           epochs=spec.spsa_epochs, batch=spec.batch, layers=spec.spsa_depths[0],
                           seed=spec.seeds[0], val_fraction=spec.val_fraction)
    t = await tune_spsa(cfg, a_grid=spec.spsa_a_grid, c_grid=(spec.spsa_c,), epochs=spec.spsa_tune_epochs,
                        task=spec.load(spec.seeds[0]))
    trials = ", ".join(f"a={x['a']:g} val {x['val_acc']:.3f}" for x in t.trials)
    log(f"{device}: SPSA gains tuned on validation: a={t.best['a']:g} c={t.best['c']:g} (trials: {trials})")
    return {"device": device, **t.to_dict()}


async def _hybrid_job(spec: GridSpec, unit: int, seed: int, log) -> list[dict[str, Any]]:
    from pat_runtime.devices.factory import make_device
    from pat_runtime.datasets import load_task, with_validation
    from pat_runtime.trainers.run import ExperimentConfig, run_experiment

    task = with_validation(load_task(spec.hybrid_task, seed=seed), spec.val_fraction, seed=seed)  # whole split
    uri = spec.uri(spec.hybrid_device, unit)
    dev = make_device(uri)
    await dev.connect()
    out = []
    try:
        for method in ("pat", "digital"):
            if method == "digital" and unit != spec.units[0]:
                continue      # the digital net has no hardware: one run per seed
            cfg = ExperimentConfig(device=uri, task=spec.hybrid_task, method=method, twin=spec.hybrid_twin,
                                   epochs=spec.hybrid_epochs, batch=spec.batch, layers=spec.hybrid_layers,
                                   hybrid=method == "pat", channels=spec.hybrid_channels,
                                   lr=spec.hybrid_lr if method == "pat" else None, seed=seed,
                                   val_fraction=spec.val_fraction, eval_test="final")
            t1 = time.perf_counter()
            r = await run_experiment(cfg, task=task, device=dev)
            out.append(_record(spec, spec.hybrid_device if method == "pat" else "digital",
                               unit if method == "pat" else None, seed, spec.hybrid_layers, method, r.summary,
                               None, time.perf_counter() - t1, {"hybrid": True}))
            spec.log_run(out[-1])
            log(f"hybrid {spec.hybrid_task} {uri} seed {seed} {method}: val {r.summary['val_acc']:.3f} "
                f"test {r.summary['test_acc']:.3f}")
    finally:
        await dev.close()
    return out


def _run(kind: str, spec_d: dict, args: tuple, done: frozenset = frozenset()) -> Any:
    """Process-pool entry point: one job, one torch thread, its own event loop."""
    import torch

    torch.set_num_threads(1)
    spec = GridSpec.from_dict(spec_d)
    lines: list[str] = []

    def log(line: str) -> None:      # live progress from the worker; the parent prints nothing twice
        print(line, flush=True)

    
    if kind == "device":
        dev, unit, seeds, spsa, *depths = args
        res = asyncio.run(_device_job(spec, dev, unit, seeds, spsa, log=log, done=done,
                                      depths=depths[0] if depths else None))
    elif kind == "digital":
        res = asyncio.run(_digital_job(spec, *args, log=log, done=done))
    elif kind == "hybrid":
        res = asyncio.run(_hybrid_job(spec, *args, log=log))
    elif kind == "tune":
        res = asyncio.run(_tune_job(spec, *args, log=log))
    else:
        raise ValueError(kind)
    return res, lines


def _pool_map(jobs: list[tuple[str, tuple]], spec: GridSpec, workers: int, log,
              done: frozenset = frozenset()) -> list[Any]:
    results: list[Any] = [None] * len(jobs)
    if workers <= 1:
        for i, (kind, args) in enumerate(jobs):
            results[i], lines = _run(kind, spec.to_dict(), args, done)
            for ln in lines:
                log(ln)
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
        futs = {ex.submit(_run, kind, spec.to_dict(), args, done): i for i, (kind, args) in enumerate(jobs)}
        for f in as_completed(futs):
            results[futs[f]], lines = f.result()
            for ln in lines:
                log(ln)
    return results


def run_grid(spec: GridSpec, workers: int = 2, log: Callable[[str], None] = print,
             previous: list[dict[str, Any]] | None = None,
             tuning: dict[str, dict[str, Any]] | None = None,
             on_tuning: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the whole grid; returns ``{"spec", "spsa_tuning", "runs", "seconds"}`` (the results.json body).

    A resumed grid passes the ``previous`` runs (records of an interrupted run of the same spec) and their
    SPSA ``tuning``: those runs are kept and not run again; only the missing ones are. ``on_tuning(tuning)``
    is called once the SPSA gains are known (e.g. to save them for a resume)."""
    t0 = time.perf_counter()
    previous = list(previous or [])
    done = frozenset(run_key(r) for r in previous)
    tuning = dict(tuning or {})
    if "spsa" in spec.methods and spec.spsa_depths and not all(d in tuning for d in spec.devices):
        if len(spec.spsa_a_grid) > 1:
            todo = [d for d in spec.devices if d not in tuning]
            for t in _pool_map([("tune", (d,)) for d in todo], spec, workers, log):
                tuning[t["device"]] = t
        else:
            tuning = {d: {"device": d, "best": {"a": spec.spsa_a_grid[0], "c": spec.spsa_c}, "trials": []}
                      for d in spec.devices}
        if on_tuning is not None:
            on_tuning(tuning)
    jobs: list[tuple[str, tuple]] = []
    if spec.twin_cache:
        # (device, unit, seed, depth) jobs, the deepest layer first, then seed-major: an interrupted grid has its
        # headline (deepest) cells complete and whole seeds on every device and unit
        for depth in depth_priority(spec.depths):
            for seed in spec.seeds:
                for unit in spec.units:
                    for dev in spec.devices:
                        jobs.append(("device", (dev, unit, (seed,), tuning.get(dev, {}).get("best"), (depth,))))
    else:
        for dev in sorted(spec.devices, key=lambda d: d != "shg"):   # longest jobs first
            for unit in spec.units:
                jobs.append(("device", (dev, unit, spec.seeds, tuning.get(dev, {}).get("best"))))
    if "digital" in spec.methods:
        jobs = [("digital", (seed,)) for seed in spec.seeds[:1]] + jobs + \
            [("digital", (seed,)) for seed in spec.seeds[1:]]
    runs: list[dict[str, Any]] = list(previous)
    for res in _pool_map(jobs, spec, workers, log, done):
        runs.extend(res)
    return {"spec": spec.to_dict(), "spsa_tuning": tuning, "runs": runs, "seconds": time.perf_counter() - t0}


def run_hybrid(spec: GridSpec, workers: int = 2, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Hybrid PAT vs the digital net of the same widths on ``spec.hybrid_task`` (seeds x units)."""
    from pat_runtime.datasets import task_info

    jobs = [("hybrid", (unit, seed)) for seed in spec.seeds for unit in spec.units]
    runs: list[dict[str, Any]] = []
    for res in _pool_map(jobs, spec, workers, log):
        runs.extend(res)
    desc = (f"`{spec.hybrid_task}` ({task_info(spec.hybrid_task)['description']}): hybrid PNN = "
            f"Linear(features → {spec.hybrid_channels}·in_dim) → {spec.hybrid_layers} physical layer(s) of "
            f"`sim:{spec.hybrid_device}` ({spec.hybrid_channels} channels) → Linear(→ classes), PAT with the "
            f"{spec.hybrid_twin} twin, Adam lr {spec.hybrid_lr}, {spec.hybrid_epochs} epochs; the digital net has the "
            f"same widths with a tanh in place of the device (lr 0.01). n = seeds × units for PAT, seeds for digital.")
    return {"task": spec.hybrid_task, "device": f"sim:{spec.hybrid_device}", "description": desc, "runs": runs}
