"""A real two-node Ray cluster on this machine (head + one worker node, each ``ray start`` on 127.0.0.1), shared
by the Ray tests of a session and always torn down. Skipped cleanly without the ``ray`` extra."""
import os

import pytest

from pat_runtime.testing.ray_cluster import LocalRayCluster

try:
    import ray
except ImportError:  # the test modules skip themselves (pytest.importorskip)
    ray = None


@pytest.fixture(scope="session")
def ray_cluster():
    """``(cluster, worker_node)``: 2 CPUs on each node, 100 MB object stores, no dashboard; the driver
    (this process) is connected with ``ray.init``."""
    if ray is None:
        pytest.skip("the 'ray' extra is not installed")
    cluster = LocalRayCluster(num_cpus=2, object_store_mb=100)
    saved = {k: os.environ.get(k) for k in cluster.driver_env()}
    os.environ.update(cluster.driver_env())
    try:
        cluster.start()
        worker = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        yield cluster, worker
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
