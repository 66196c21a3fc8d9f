"""One fleet training run end to end (used by ``pat fleet``): simulated fleet -> twins -> PAT -> report.

    summary = await run_fleet(FleetConfig(nodes=16, faults="drop=0.05,crash=2", task="digits"))

``mode="data"``: data-parallel :class:`FleetTrainer` over every node. ``mode="pipeline"``: physical layer k
on node k (:class:`PipelineTrainer`), the remaining nodes are spares. Test accuracy is physical: the test
set is sharded over the fleet (each sample measured on whichever node took its shard).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from pat_runtime import defaults as D

from .report import failure_counts, format_failures, format_faults
from .training import (EpochStats, FittedTwins, FleetTrainer, NominalTwins, PipelineTrainer,
                       twin_sim_options)


@dataclass
class FleetConfig:
    nodes: int = 16
    device: str = "sim:plate"
    faults: str | None = None
    transport: str = "inproc"
    backend: str = "local"           # local (nodes in this process) | ray (nodes in Ray actors, ZeroMQ)
    address: str | None = None       # ray: a running cluster ("auto", "HOST:PORT"); None: a private local Ray
    nodes_per_actor: int = 1         # ray: virtual nodes multiplexed per actor
    actor_cpus: float = 0.25         # ray: CPUs declared per actor
    task: str = "digits"
    n_train: int | None = None
    n_test: int | None = None
    mode: str = "data"
    epochs: int = 4
    batch: int = 64
    shard: int | None = None         # default: max(4, ceil(batch / nodes)), so a batch spans the fleet
    lr: float | None = None          # default: pat_runtime.defaults.default_lr (hybrid nets: LR_HYBRID)
    twin: str = "greybox"
    twin_samples: int = 256
    twin_epochs: int = 5
    layers: int = D.LAYERS
    hybrid: bool = True
    cap: int = 2
    timeout: float = 0.3
    heartbeat: float = 0.25
    liveness: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = D.default_lr("pat", self.hybrid)


async def run_fleet(cfg: FleetConfig, log: Callable[[str], Any] = print) -> dict[str, Any]:
    from pat_runtime.datasets import load_task
    from pat_runtime.pat import build_pnn
    from pat_runtime.twins import make_twin
    from pat_runtime.fleet.simfleet import SimFleet

    if cfg.backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {cfg.backend!r}")
    if cfg.mode not in ("data", "pipeline"):
        raise ValueError(f"mode must be 'data' or 'pipeline', got {cfg.mode!r}")
    if cfg.mode == "pipeline" and cfg.nodes < cfg.layers:
        raise ValueError(f"pipeline mode needs at least {cfg.layers} nodes (one per physical layer)")
    if cfg.shard is None:
        cfg.shard = max(4, -(-cfg.batch // cfg.nodes))
    task = load_task(cfg.task, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test)
    opts = twin_sim_options(cfg.device)
    t_start = time.perf_counter()
    common = dict(faults=cfg.faults, seed=cfg.seed, cap=cfg.cap, timeout=cfg.timeout, heartbeat=cfg.heartbeat,
                  liveness=cfg.liveness, join_timeout=60.0)
    if cfg.backend == "ray":
        from .ray_backend import RayFleet

        fleet_cm: SimFleet = RayFleet(cfg.nodes, cfg.device, address=cfg.address,
                                      nodes_per_actor=cfg.nodes_per_actor, num_cpus=cfg.actor_cpus,
                                      **{**common, "join_timeout": 300.0})
        where = f"zmq in Ray actors ({cfg.nodes_per_actor} per actor, {cfg.address or 'local Ray'})"
    else:
        fleet_cm = SimFleet(cfg.nodes, cfg.device, transport=cfg.transport, **common)
        where = cfg.transport
    async with fleet_cm as fleet:
        m = fleet.manager
        log(f"fleet: {cfg.nodes} nodes on {where}, device {cfg.device}, "
            f"faults {fleet.faults}; joined in {time.perf_counter() - t_start:.2f} s")
        spec = m.nodes[fleet.node_ids[0]].spec
        model = build_pnn(task.n_features, task.n_classes, twin=make_twin("nominal", spec, sim_options=opts),
                          spec=spec, layers=cfg.layers, hybrid=cfg.hybrid, seed=cfg.seed)
        with torch.no_grad():
            model.calibrate(torch.from_numpy(task.x_train[:256]))
        twins = (NominalTwins(opts) if cfg.twin == "nominal" else
                 FittedTwins(cfg.twin, opts, n_samples=cfg.twin_samples, epochs=cfg.twin_epochs, seed=cfg.seed))
        kw = dict(lr=cfg.lr, batch_size=cfg.batch, seed=cfg.seed)
        if cfg.mode == "data":
            trainer = FleetTrainer(m, model, twins, shard_size=cfg.shard, **kw)
            eval_trainer = trainer
        else:
            ids = fleet.node_ids
            trainer = PipelineTrainer(m, model, twins, ids[:cfg.layers], spares=ids[cfg.layers:],
                                      micro_batch=cfg.shard, cap=cfg.cap, **kw)
            eval_trainer = FleetTrainer(m, model, twins, shard_size=cfg.shard, **kw)
        t0 = time.perf_counter()
        await trainer.prepare()
        twin_s = time.perf_counter() - t0
        if twins.reports:
            nm = [r.nmse_val for r in twins.reports.values()]
            log(f"twins: {len(nm)} per-device {cfg.twin} twins in {twin_s:.1f} s, held-out NMSE "
                f"{min(nm):.4f}..{max(nm):.4f}")
        m.metrics.reset()
        epochs: list[dict[str, Any]] = []
        snap = (m.metrics.summary(), fleet.fault_counters())
        for ep in range(cfg.epochs):
            st: EpochStats = await trainer.train_epoch(task.x_train, task.y_train, ep)
            test_acc = await eval_trainer.evaluate(task.x_test, task.y_test, shard_size=cfg.batch)
            now = (m.metrics.summary(), fleet.fault_counters())
            fails = failure_counts(snap[0], now[0], snap[1], now[1], st.failures)
            snap = now
            row = {**asdict(st), "test_acc": test_acc, "failure_counts": fails}
            epochs.append(row)
            log(f"epoch {ep}: loss {st.loss:.4f}  train {st.accuracy:.3f}  test {test_acc:.3f}  "
                f"{st.seconds:.1f} s  ledger ok ({st.ledger['samples']} samples exactly once, "
                f"{st.ledger['shards']} shards on {st.ledger['nodes']} nodes)  reassigned {st.reassigned}  "
                f"{format_failures(fails)}")
        log(m.metrics.table())
        faults = fleet.fault_counters()
        summary = {
            "config": asdict(cfg),
            "epochs": epochs,
            "final_test_acc": epochs[-1]["test_acc"] if epochs else None,
            "metrics": m.metrics.summary(),
            "faults": faults,
            "nodes": m.status(),
            "twin_seconds": twin_s,
            "wall_s": time.perf_counter() - t_start,
        }
        if cfg.mode == "pipeline":
            summary["pipeline_moves"] = list(getattr(trainer, "moves", []))
        log(format_faults(faults))
    return summary
