"""A separate edge-node process for crash tests: ``python edge_proc.py URL NODE_ID HEARTBEAT [LATENCY]``.

Serves a noise-free circuit sim through :class:`MqttEdgeTransport` until SIGTERM (or until it is killed).
"""
from __future__ import annotations

import asyncio
import signal
import sys


async def main(url: str, node_id: str, heartbeat: float, latency: float) -> None:
    import torch

    torch.set_num_threads(1)
    from pat_runtime.edge.service import NodeService
    from pat_runtime.testing import sim_device
    from pat_runtime.transport.mqtt import MqttEdgeTransport

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    service = NodeService(await sim_device("circuit", noise=0.0, latency=latency), node_id)
    await MqttEdgeTransport(url, node_id, heartbeat=heartbeat, keepalive=2).serve(service, stop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0))
