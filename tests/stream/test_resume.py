"""Stream trainer: crash mid-way, resume from the checkpoint; every sample applied exactly once."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from pat_runtime.pat import build_pnn
from pat_runtime.stream.checkpoint import CheckpointManager
from pat_runtime.stream.refresh import RefreshConfig
from pat_runtime.stream.sources import IteratorSource, MqttSource, Sample, publish_samples, task_stream
from pat_runtime.stream.trainer import StreamConfig, StreamTrainer
from pat_runtime.testing import sim_device
from pat_runtime.twins import make_twin, sim_options_of
from pat_runtime.testing import wait_until

torch.set_num_threads(1)
N_FEAT, N_CLS = 16, 4


class Crash(RuntimeError):
    pass


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLS, n)
    x = np.clip(rng.normal(0.5, 0.15, (n, N_FEAT)) + 0.3 * (y[:, None] == np.arange(N_FEAT) % N_CLS), 0, 1)
    return x.astype(np.float32), y


async def _trainer(source, ckpt, model_seed=0, on_step=None, refresh=True):
    dev = await sim_device("plate", noise=0.0, unit=1, seed=3)
    twin = make_twin("greybox", dev.spec, sim_options=sim_options_of(dev))
    pnn = build_pnn(N_FEAT, N_CLS, twin, device=dev, layers=1, seed=model_seed)
    cfg = StreamConfig(lr=0.01, checkpoint_every=10, replay_capacity=1024,
                       refresh=RefreshConfig(every=25, window=512, epochs=2, min_samples=128, min_gap=10)
                       if refresh else None)
    return StreamTrainer(pnn, twin, source, checkpoint_dir=ckpt, config=cfg, on_step=on_step, seed=1)


def _crash_at(step):
    def on_step(rec):
        if rec["step"] == step:
            raise Crash(f"simulated crash after step {step}")
    return on_step


async def test_crash_and_resume_is_exactly_once_and_equals_an_uninterrupted_run(tmp_path):
    x, y = _data()
    gen = task_stream(x, y, batch_size=8, seed=2, limit=60)

    ref = await _trainer(IteratorSource(gen), tmp_path / "ref")
    await ref.run()
    assert ref.step == 60 and ref.refresher.refits == 2

    a = await _trainer(IteratorSource(gen), tmp_path / "run", on_step=_crash_at(37))
    with pytest.raises(Crash):
        await a.run()
    assert a.step == 37  # 7 updates past the last checkpoint (step 30) were never persisted

    # a fresh process: a different initial model, proving everything comes from the checkpoint
    b = await _trainer(IteratorSource(gen), tmp_path / "run", model_seed=99)
    summary = await b.run()
    assert b.resumed_from == 30 and summary["new_steps"] == 30 and summary["offset"] == 60
    final = CheckpointManager(tmp_path / "run").latest()
    assert final["step"] == 60 and [int(s) for s in final["seq_log"]] == list(range(60))  # no gap, no repeat
    for k, v in ref.pnn.state_dict().items():
        torch.testing.assert_close(b.pnn.state_dict()[k], v, rtol=0, atol=1e-6, msg=k)
    for k, v in ref.twin.state_dict().items():
        torch.testing.assert_close(b.twin.state_dict()[k], v, rtol=0, atol=1e-6, msg=k)

    # graceful stop writes a final checkpoint: the next run continues without repeating anything
    stop = asyncio.Event()
    c = await _trainer(IteratorSource(task_stream(x, y, batch_size=8, seed=2, limit=80)), tmp_path / "run",
                       on_step=lambda rec: stop.set() if rec["step"] == 70 else None)
    await c.run(stop=stop)
    d = await _trainer(IteratorSource(task_stream(x, y, batch_size=8, seed=2, limit=80)), tmp_path / "run")
    await d.run()
    assert c.step == 70 and d.resumed_from == 70 and d.step == 80
    assert [int(s) for s in CheckpointManager(tmp_path / "run").latest()["seq_log"]] == list(range(80))


@pytest.mark.mqtt
async def test_mqtt_stream_survives_a_crash_without_losing_or_repeating_samples(tmp_path):
    from pat_runtime.testing.mosquitto import mosquitto_broker, require_mosquitto

    require_mosquitto()
    x, y = _data(seed=1)
    msgs = [Sample.make(i, x[8 * i % 248: 8 * i % 248 + 8], y[8 * i % 248: 8 * i % 248 + 8]) for i in range(50)]
    async with mosquitto_broker() as broker:
        url = f"{broker.url}/lab/samples"
        spool = tmp_path / "ckpt"
        # the trainer subscribes first (persistent session), then the producer publishes 40 samples
        src = MqttSource(url, spool, fsync=False)
        a = await _trainer(src, spool, on_step=_crash_at(23), refresh=False)
        task = asyncio.create_task(a.run())
        await wait_until(lambda: src.connected, what="the trainer's source subscribed")
        await publish_samples(url, msgs[:30])
        with pytest.raises(Crash):
            await asyncio.wait_for(task, 30)
        await publish_samples(url, msgs[30:40] + msgs[5:8])  # while it is down; plus 3 stale duplicates

        stop = asyncio.Event()
        src = MqttSource(url, spool, fsync=False)
        b = await _trainer(src, spool, model_seed=7,
                           on_step=lambda rec: stop.set() if rec["seq"] == 49 else None, refresh=False)
        task = asyncio.create_task(b.run(stop=stop))
        await wait_until(lambda: src.connected, what="the restarted trainer's source subscribed")
        await publish_samples(url, msgs[40:50])
        summary = await asyncio.wait_for(task, 30)
    assert b.resumed_from == 20 and summary["offset"] == 50
    seqs = [int(s) for s in CheckpointManager(spool).latest()["seq_log"]]
    assert seqs == list(range(50))
    assert b.source.counters["duplicates"] >= 3
