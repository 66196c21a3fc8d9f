"""MQTT v5 shared subscriptions through the real Mosquitto: coordinator replicas of one group share a fleet's
replies (each reply reaches exactly one replica), replicas leave and the others take over; the ordinary
per-replica request path keeps working beside it."""
from collections import Counter

import numpy as np
import pytest

from pat_runtime.transport.mqtt.shared import SharedMqttCoordinator
from pat_runtime.testing import wait_until

pytestmark = pytest.mark.timeout(60)


async def test_replicas_share_one_fleets_replies(broker, edge_node):
    got: dict[str, Counter] = {}
    results: dict[str, np.ndarray] = {}

    def handler(name):
        def on_reply(node, header, arrays):
            assert header["ok"], header
            got[name][header["id"]] += 1
            results[header["id"]] = arrays[0]
        got[name] = Counter()
        return on_reply

    reps = [SharedMqttCoordinator(broker.url, group="g1", on_reply=handler(f"r{i}"), client_id=f"r{i}", timeout=5)
            for i in range(3)]
    async with edge_node(broker.url, "n0", heartbeat=0.2), edge_node(broker.url, "n1", heartbeat=0.2):
        try:
            for r in reps:
                await r.start()
                await r.wait_for_nodes(2, timeout=10)
            spec = reps[0].nodes["n0"].spec
            x = np.full((2, spec.in_dim), 0.1, np.float32)
            theta = np.zeros(spec.param_dim, np.float32)
            ids = [await reps[0].submit(f"n{k % 2}", "apply", [x, theta]) for k in range(60)]
            total = lambda: sum(sum(c.values()) for c in got.values())  # noqa: E731
            await wait_until(lambda: total() >= 60, 20, "60 group replies")
            per = {k: sum(c.values()) for k, c in got.items()}
            seen = Counter()
            for c in got.values():
                seen.update(c)
            assert set(seen) == set(ids) and set(seen.values()) == {1}, per          # each exactly once
            assert sum(v > 0 for v in per.values()) >= 2, per                        # spread over replicas
            # the ordinary request path of one replica still answers that replica only
            reply, (y,) = await reps[1].request("n1", "apply", [x, theta])
            assert reply["ok"] and y.shape[0] == 2 and total() == 60
            # a replica leaves: the remaining two receive every further reply
            await reps[2].close()
            before = dict(got["r2"])
            more = [await reps[1].submit("n0", "apply", [x, theta]) for _ in range(30)]
            await wait_until(lambda: total() >= 90, 20, "30 more group replies")
            assert dict(got["r2"]) == before
            seen = Counter()
            for c in got.values():
                seen.update(c)
            assert set(more) <= set(seen) and set(seen.values()) == {1}
            assert sum(r.shared["duplicates"] for r in reps) == 0
        finally:
            for r in reps:
                await r.close()


def test_group_must_be_a_topic_level():
    with pytest.raises(ValueError, match="replica group"):
        SharedMqttCoordinator("mqtt://127.0.0.1:1", group="a/b")
