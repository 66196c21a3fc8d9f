"""Physics-aware training across a fleet, with exactly-once gradient accounting.

**Data parallel** (:class:`FleetTrainer`). One shared PNN (θ and digital weights, :mod:`pat_runtime.pat`) lives
on the coordinator. Each batch ``B`` is cut into shards; the :class:`ShardScheduler` runs each shard on
some node ``n``, whose device is a different unit (its own hidden variation) with its own twin ``f_m^n``::

    shard s on node n:   forward  = the PNN with every physical layer measured on n's device
                         backward = PAT: VJP of n's twin at the applied (x, θ)   (pat_runtime.pat.pat_apply)
                         g_s      = ∂/∂w Σ_{i ∈ s} CE(logits_i, label_i)          (a sum, not yet averaged)
    batch update:        w <- Adam(w, (1/|B|) Σ_s g_s),  θ clamped back into theta_range

This is :class:`pat_runtime.pat.PATStep` split in two (:meth:`~pat_runtime.pat.PATStep.gradients` per shard,
:meth:`~pat_runtime.pat.PATStep.apply` per batch), with the fleet's node chosen by a resolver
(:func:`pat_runtime.pat.per_layer`) in the one physical forward, :meth:`pat_runtime.pat.PNN.aforward`.

``g_s`` is added to the batch gradient only in the scheduler's ``on_result`` callback, which runs exactly
once per shard id however many times the shard was sent (retries, reassignment after a node died, a
speculative duplicate on a straggler). The :class:`ExactlyOnceLedger` counts every sample id it is told
about, raises at once if a sample would be applied twice, and :meth:`ExactlyOnceLedger.check` at the end
of each epoch asserts that every training sample contributed exactly once.

**Pipeline** (:class:`PipelineTrainer`). The physical layers of a multi-layer PNN are placed on different
nodes (layer k on node k). Micro-batches are started together; each goes through layer 1 on node 1, layer
2 on node 2, ..., so while micro-batch m is on node 2, m+1 is on node 1 (at most ``cap`` micro-batches per
node at once). Backward uses each layer node's twin. If a layer's node fails, the layer moves to a spare
node and the micro-batch is re-run; its gradient is still accumulated exactly once (same ledger).

**Twins** (:class:`TwinProvider`): ``NominalTwins`` (one datasheet model for all nodes) or ``FittedTwins``
(a per-device grey-box twin fitted from that node's own measurements, :func:`pat_runtime.twins.build_twin`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch
from torch import nn

from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError, PatError, RemoteDeviceError
from pat_runtime.pat import PNN, PATStep, per_layer

from .manager import FleetDevice, FleetManager
from .scheduler import FleetError, Shard, ShardScheduler, is_retryable

log = logging.getLogger(__name__)

#: keys of a sim URI that describe the unit or the instrument, not the physics a twin needs
UNIT_OPTIONS = frozenset({"unit", "seed", "variation", "noise", "noise_mult", "drift", "drift_revert",
                          "dac_bits", "adc_bits", "latency", "name"})


class LedgerError(PatError, RuntimeError):
    """A sample's gradient was applied twice, or not at all, in an epoch (a real error, not an ``assert``:
    it must survive ``python -O``)."""


class ExactlyOnceLedger:
    """Counts, per epoch, how many times each sample id's gradient was applied (must be exactly once)."""

    def __init__(self, n_samples: int):
        self.n = int(n_samples)
        self.counts = np.zeros(self.n, dtype=np.int32)
        self.epoch: int | None = None
        self.expected: np.ndarray = np.arange(self.n)
        self.records: list[tuple[int, Hashable, str, int]] = []   # (epoch, shard id, node, samples)
        self.closed: list[int] = []

    def begin(self, epoch: int, ids: np.ndarray | None = None) -> None:
        self.epoch = int(epoch)
        self.counts[:] = 0
        self.expected = np.arange(self.n) if ids is None else np.unique(np.asarray(ids))

    def record(self, shard_id: Hashable, node: str, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        if self.epoch is None:
            raise LedgerError("record() before begin()")
        if len(np.unique(ids)) != len(ids) or np.any(self.counts[ids] > 0):
            dup = np.unique(ids[self.counts[ids] > 0]) if np.any(self.counts[ids] > 0) else ids
            raise LedgerError(f"epoch {self.epoch}: shard {shard_id!r} from {node} would apply samples "
                              f"{dup[:10].tolist()} a second time")
        self.counts[ids] += 1
        self.records.append((self.epoch, shard_id, node, len(ids)))

    def check(self) -> dict[str, int]:
        """Assert every expected sample was applied exactly once (and nothing else); return a summary."""
        missing = self.expected[self.counts[self.expected] == 0]
        extra_mask = np.ones(self.n, bool)
        extra_mask[self.expected] = False
        extra = np.flatnonzero(extra_mask & (self.counts > 0))
        twice = np.flatnonzero(self.counts > 1)
        if len(missing) or len(extra) or len(twice):
            raise LedgerError(f"epoch {self.epoch}: {len(missing)} sample(s) never applied "
                              f"{missing[:10].tolist()}, {len(twice)} applied more than once, "
                              f"{len(extra)} not in this epoch")
        self.closed.append(int(self.epoch))
        epoch_records = [r for r in self.records if r[0] == self.epoch]
        return {"epoch": int(self.epoch), "samples": int(self.counts.sum()), "shards": len(epoch_records),
                "nodes": len({r[2] for r in epoch_records})}


# ---------------------------------------------------------------------------------------------------
# Twins per node
# ---------------------------------------------------------------------------------------------------
def twin_sim_options(device_uri: str) -> dict[str, Any]:
    """The physics options (dims, integration steps, ...) of a ``sim:KIND?..`` URI, for twins."""
    from pat_runtime.sims.uri import parse_sim_uri

    return {k: v for k, v in parse_sim_uri(device_uri)[1].items() if k not in UNIT_OPTIONS}


class TwinProvider:
    """Gives the twin ``f_m^n`` of node ``n`` (built once per node id, on first use, then cached)."""

    def __init__(self) -> None:
        self.twins: dict[str, nn.Module] = {}
        self.reports: dict[str, Any] = {}
        self._building: dict[str, asyncio.Future] = {}

    async def get(self, node_id: str, device: FleetDevice) -> nn.Module:
        if node_id in self.twins:
            return self.twins[node_id]
        fut = self._building.get(node_id)
        if fut is None:
            fut = self._building[node_id] = asyncio.ensure_future(self._build(node_id, device))
        try:
            twin = await asyncio.shield(fut)
        except BaseException:
            if fut.done():
                self._building.pop(node_id, None)
            raise
        self.twins[node_id] = twin
        self._building.pop(node_id, None)
        return twin

    async def _build(self, node_id: str, device: FleetDevice) -> nn.Module:
        raise NotImplementedError

    async def close(self) -> None:
        for f in self._building.values():
            f.cancel()
        await asyncio.gather(*self._building.values(), return_exceptions=True)
        self._building.clear()


class NominalTwins(TwinProvider):
    """One datasheet (nominal physics) twin shared by every node: no calibration measurements."""

    def __init__(self, sim_options: dict[str, Any] | None = None):
        super().__init__()
        self.sim_options = dict(sim_options or {})
        self._shared: nn.Module | None = None

    async def _build(self, node_id: str, device: FleetDevice) -> nn.Module:
        if self._shared is None:
            from pat_runtime.twins import make_twin

            self._shared = make_twin("nominal", device.spec, sim_options=self.sim_options)
        return self._shared


class FittedTwins(TwinProvider):
    """A per-device twin for each node, fitted to ``n_samples`` of that node's measurements."""

    def __init__(self, kind: str = "greybox", sim_options: dict[str, Any] | None = None, n_samples: int = 512,
                 epochs: int = 8, seed: int = 0):
        super().__init__()
        self.kind, self.sim_options = kind, dict(sim_options or {})
        self.n_samples, self.epochs, self.seed = int(n_samples), int(epochs), int(seed)

    async def _build(self, node_id: str, device: FleetDevice) -> nn.Module:
        from pat_runtime.twins import collect, fit_twin, make_twin

        opts = {"sim_options": self.sim_options} if self.kind in ("nominal", "greybox", "residual") else {}
        twin = make_twin(self.kind, device.spec, **opts)
        data = await collect(device, self.n_samples, batch=min(256, self.n_samples), repeats=1, seed=self.seed)
        # fitting is CPU work: keep the event loop (and the fleet's heartbeats) responsive
        report = await asyncio.to_thread(fit_twin, twin, data, epochs=self.epochs, seed=self.seed, patience=None)
        self.reports[node_id] = report
        log.info("twin for %s: %s", node_id, report)
        return twin


@dataclass
class ShardResult:
    ids: np.ndarray
    grads: list[torch.Tensor | None]
    loss: float          # summed over the shard
    correct: int


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    seconds: float
    samples: int
    ledger: dict[str, int]
    reassigned: int = 0       # shards re-queued after a node failure
    speculative: int = 0      # shards also started on a second node because the first was straggling
    duplicates: int = 0
    failures: int = 0
    by_node: dict[str, int] = field(default_factory=dict)


class _TrainerBase:
    def __init__(self, manager: FleetManager, model: PNN, twins: TwinProvider, *, lr: float = 0.02,
                 batch_size: int = 64, seed: int = 0, optimizer: torch.optim.Optimizer | None = None,
                 request_timeout: float | None = None):
        self.manager, self.model, self.twins = manager, model, twins
        self.batch_size, self.seed = int(batch_size), int(seed)
        #: the one PAT step (:class:`pat_runtime.pat.PATStep`): gradients per shard, one update per batch
        self.step = PATStep(model, optimizer, lr=lr)
        self.params, self.opt = self.step.params, self.step.opt
        self.request_timeout = request_timeout
        self.devices: dict[str, FleetDevice] = {}
        self.ledger: ExactlyOnceLedger | None = None
        self.history: list[EpochStats] = []

    async def device(self, node_id: str) -> FleetDevice:
        dev = self.devices.get(node_id)
        if dev is None:
            dev = FleetDevice(self.manager, node_id, timeout=self.request_timeout)
            await dev.connect()
            self.devices[node_id] = dev
        return dev

    async def node_twin(self, node_id: str) -> tuple[FleetDevice, nn.Module]:
        dev = await self.device(node_id)
        return dev, await self.twins.get(node_id, dev)

    async def prepare(self, nodes: Sequence[str] | None = None) -> list[str]:
        """Build the twins of ``nodes`` (default: all available) up front, concurrently.

        A node whose twin cannot be built now (it timed out, crashed) is left for later: its twin is built
        when it first takes a shard, and a failure there is the scheduler's to handle (the shard moves to
        another node). Returns the nodes that failed; raises only when every node failed."""
        nodes = list(nodes or self.manager.available())
        res = await asyncio.gather(*(self.node_twin(n) for n in nodes), return_exceptions=True)
        failed = [n for n, r in zip(nodes, res) if isinstance(r, BaseException)]
        for n, r in zip(nodes, res):
            if isinstance(r, asyncio.CancelledError):
                raise r
            if isinstance(r, BaseException):
                log.warning("twin for %s not built yet (%s); it is retried when the node takes a shard", n, r)
        if nodes and len(failed) == len(nodes):
            raise next(r for r in res if isinstance(r, BaseException))
        return failed

    async def _shard(self, x: np.ndarray, y: np.ndarray, ids: np.ndarray, devices: Sequence[FleetDevice],
                     twins: Sequence[nn.Module]) -> ShardResult:
        """Physical layer k on ``devices[k]`` / ``twins[k]``: the summed loss's gradients of one shard."""
        logits = await self.step.logits(torch.from_numpy(x), per_layer(devices, twins))
        labels = torch.from_numpy(y)
        loss, grads = self.step.gradients(logits, labels, reduction="sum")
        return ShardResult(ids, grads, float(loss), int((logits.argmax(1) == labels).sum()))


class FleetTrainer(_TrainerBase):
    """Synchronous data-parallel PAT over the fleet (see module docstring).

    ``shard_size`` samples per shard (the unit of scheduling and of reassignment).
    """

    def __init__(self, manager: FleetManager, model: PNN, twins: TwinProvider, *, shard_size: int = 16,
                 scheduler: ShardScheduler | None = None, **kw: Any):
        super().__init__(manager, model, twins, **kw)
        self.shard_size = int(shard_size)
        self.scheduler = scheduler or ShardScheduler(manager)
        #: called as ``on_shard(epoch, batch_index, shard, node)`` after each accepted shard (tests, chaos)
        self.on_shard: Callable[[int, int, Shard, str], Any] | None = None

    async def _work(self, node: str, shard: Shard) -> ShardResult:
        ids, x, y = shard.payload
        dev, twin = await self.node_twin(node)
        L = len(self.model.physical_layers)
        return await self._shard(x, y, ids, [dev] * L, [twin] * L)

    async def train_epoch(self, x: np.ndarray, y: np.ndarray, epoch: int) -> EpochStats:
        x = np.ascontiguousarray(x, np.float32)
        y = np.asarray(y, np.int64)
        if self.ledger is None or self.ledger.n != len(x):
            self.ledger = ExactlyOnceLedger(len(x))
        ledger = self.ledger
        ledger.begin(epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(x))
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        agg = EpochStats(epoch, 0.0, 0.0, 0.0, 0, {})
        for b, start in enumerate(range(0, len(x), self.batch_size)):
            idx = order[start:start + self.batch_size]
            shards = [Shard((epoch, b, j), (idx[j:j + self.shard_size], x[idx[j:j + self.shard_size]],
                                            y[idx[j:j + self.shard_size]]), size=len(idx[j:j + self.shard_size]))
                      for j in range(0, len(idx), self.shard_size)]
            acc: list[torch.Tensor | None] = [None] * len(self.params)

            def accept(shard: Shard, node: str, r: ShardResult, b=b) -> None:
                nonlocal loss_sum, correct
                ledger.record(shard.id, node, r.ids)      # raises on a second application
                for i, g in enumerate(r.grads):
                    if g is not None:
                        acc[i] = g.clone() if acc[i] is None else acc[i].add_(g)
                loss_sum += r.loss
                correct += r.correct
                if self.on_shard is not None:
                    self.on_shard(epoch, b, shard, node)

            await self.scheduler.run(shards, self._work, on_result=accept)
            st = self.scheduler.stats
            agg.reassigned += st.reassigned
            agg.speculative += st.speculative
            agg.duplicates += st.duplicates
            agg.failures += st.failures
            for n, c in st.by_node.items():
                agg.by_node[n] = agg.by_node.get(n, 0) + c
            self.step.apply(acc, divisor=len(idx))
        agg.ledger = ledger.check()
        agg.samples = len(x)
        agg.loss, agg.accuracy = loss_sum / len(x), correct / len(x)
        agg.seconds = time.perf_counter() - t0
        self.history.append(agg)
        return agg

    async def evaluate(self, x: np.ndarray, y: np.ndarray, shard_size: int = 64) -> float:
        """Physical accuracy: the test set sharded over the fleet (each sample measured on some node)."""
        x = np.ascontiguousarray(x, np.float32)
        y = np.asarray(y, np.int64)
        L = len(self.model.physical_layers)

        async def work(node: str, shard: Shard) -> int:
            sl = shard.payload
            dev, twin = await self.node_twin(node)
            logits = await self.model.aforward(torch.from_numpy(x[sl]), per_layer([dev] * L, [twin] * L))
            return int((logits.argmax(1) == torch.from_numpy(y[sl])).sum())

        shards = [Shard(("eval", i), slice(i, i + shard_size)) for i in range(0, len(x), shard_size)]
        res = await self.scheduler.run(shards, work)
        return sum(res.values()) / len(x)

    async def fit(self, x: np.ndarray, y: np.ndarray, epochs: int,
                  callback: Callable[[EpochStats], Any] | None = None) -> list[EpochStats]:
        for ep in range(epochs):
            st = await self.train_epoch(x, y, ep)
            if callback is not None:
                callback(st)
        return self.history


class PipelineTrainer(_TrainerBase):
    """PAT with physical layer k of ``model`` on node ``placement[k]``; micro-batches are pipelined.

    ``spares`` are nodes that can take over a layer whose node failed. ``cap`` bounds the micro-batches
    in flight on each layer node.
    """

    def __init__(self, manager: FleetManager, model: PNN, twins: TwinProvider, placement: Sequence[str], *,
                 spares: Sequence[str] = (), micro_batch: int = 16, cap: int = 2, max_attempts: int = 6, **kw):
        super().__init__(manager, model, twins, **kw)
        L = len(model.physical_layers)
        if len(placement) != L:
            raise ValueError(f"placement names {len(placement)} nodes for {L} physical layers")
        self.placement = list(placement)
        self.spares = [s for s in spares if s not in self.placement]
        self.micro_batch, self.cap, self.max_attempts = int(micro_batch), int(cap), int(max_attempts)
        self._sems: dict[str, asyncio.Semaphore] = {}
        self.moves: list[tuple[int, str, str]] = []     # (layer, from node, to node)
        self.busy: dict[str, float] = {}

    class _Gate(FleetDevice):
        """A layer node's device with an in-flight cap (one semaphore per node) and busy-time metering."""

        def __init__(self, trainer: "PipelineTrainer", inner: FleetDevice):
            super().__init__(inner.manager, inner.node_id, inner.timeout)
            self._spec, self.connected, self.trainer = inner.spec, True, trainer

        async def _apply(self, x, theta):
            sem = self.trainer._sems.setdefault(self.node_id, asyncio.Semaphore(self.trainer.cap))
            async with sem:
                return await super()._apply(x, theta)

    def _move_layer(self, k: int) -> None:
        old = self.placement[k]
        spare = next((s for s in self.spares if self.manager.is_available(s)), None)
        if spare is None:
            raise FleetError(f"layer {k} lost node {old} and no spare node is available")
        self.spares.remove(spare)
        self.placement[k] = spare
        self.moves.append((k, old, spare))
        log.info("pipeline: layer %d moved from %s to %s", k, old, spare)

    async def _micro(self, mb: tuple[np.ndarray, np.ndarray, np.ndarray]) -> ShardResult:
        ids, x, y = mb
        for attempt in range(self.max_attempts):
            nodes = list(self.placement)
            try:
                pairs = [await self.node_twin(n) for n in nodes]
                devs = [self._Gate(self, d) for d, _ in pairs]
                return await self._shard(x, y, ids, devs, [t for _, t in pairs])
            except (DeviceTimeoutError, DeviceConnectionError, RemoteDeviceError) as e:
                if not is_retryable(e):
                    raise
                bad = getattr(e, "device", None)
                for k, n in enumerate(self.placement):
                    if n == bad or not self.manager.is_available(n):
                        self._move_layer(k)
        raise FleetError(f"micro-batch failed {self.max_attempts} times")

    async def train_epoch(self, x: np.ndarray, y: np.ndarray, epoch: int) -> EpochStats:
        x = np.ascontiguousarray(x, np.float32)
        y = np.asarray(y, np.int64)
        if self.ledger is None or self.ledger.n != len(x):
            self.ledger = ExactlyOnceLedger(len(x))
        self.ledger.begin(epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(x))
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for b, start in enumerate(range(0, len(x), self.batch_size)):
            idx = order[start:start + self.batch_size]
            mbs = [(idx[j:j + self.micro_batch], x[idx[j:j + self.micro_batch]], y[idx[j:j + self.micro_batch]])
                   for j in range(0, len(idx), self.micro_batch)]
            tasks = [asyncio.create_task(self._micro(mb)) for mb in mbs]
            try:
                results = await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            acc: list[torch.Tensor | None] = [None] * len(self.params)
            for j, r in enumerate(results):
                self.ledger.record((epoch, b, j), "+".join(self.placement), r.ids)
                for i, g in enumerate(r.grads):
                    if g is not None:
                        acc[i] = g.clone() if acc[i] is None else acc[i].add_(g)
                loss_sum += r.loss
                correct += r.correct
            self.step.apply(acc, divisor=len(idx))
        st = EpochStats(epoch, loss_sum / len(x), correct / len(x), time.perf_counter() - t0, len(x),
                        self.ledger.check())
        self.history.append(st)
        return st
