"""A real multi-node Ray cluster on this machine for tests and benchmarks: a head and worker nodes, each
started with ``ray start`` on 127.0.0.1 (each its own raylet, as separate machines would be).

    with LocalRayCluster(num_cpus=2) as cluster:
        worker = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address)
        ...
        cluster.kill_node(worker)            # SIGKILL that node's raylet and everything under it

Lean by default (the machine is shared): no dashboard, a 100 MB object store per node, small CPU counts,
fast node-death detection. Everything uses free ports and a private temp dir; :meth:`shutdown` kills, by
pid, only the processes of this cluster (those whose command line names its temp dir, and their children),
never every Ray process on the machine.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .core import free_port

#: node-death detection in about a second instead of Ray's default tens of seconds
FAST_FAILURE_ENV = {
    "RAY_health_check_initial_delay_ms": "500",
    "RAY_health_check_period_ms": "300",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    # a loopback-only throwaway cluster: no token auth (Ray >= 2.5x enables it by default and then wants
    # every node and driver to share ~/.ray/auth_token); real clusters keep Ray's token authentication
    "RAY_AUTH_MODE": "disabled",
}


@dataclass
class RayNode:
    name: str
    node_manager_port: int
    head: bool = False
    killed: bool = False


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(roots: list[int]) -> list[int]:
    kids, out, todo = _children(), [], list(roots)
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


class LocalRayCluster:
    """Head node (+ :meth:`add_node` workers) via ``ray start`` on 127.0.0.1 (see module docstring)."""

    def __init__(self, num_cpus: float = 2, object_store_mb: int = 100, memory_mb: int | None = None,
                 env: dict[str, str] | None = None, start_timeout: float = 120.0):
        self.num_cpus, self.object_store_mb, self.memory_mb = num_cpus, object_store_mb, memory_mb
        self.start_timeout = start_timeout
        # short: Ray puts unix sockets under it (path length limit)
        self.temp_dir = tempfile.mkdtemp(prefix="patray-", dir="/tmp")
        self.env = {**os.environ, **FAST_FAILURE_ENV, **(env or {})}
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[RayNode] = []

    def _start(self, args: list[str], name: str, head: bool, num_cpus: float, resources: dict | None) -> RayNode:
        nm_port = free_port()
        cmd = [_ray_cli(), "start", *args, "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
               f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
               f"--node-manager-port={nm_port}", f"--object-manager-port={free_port()}",
               f"--min-worker-port={free_port()}", "--max-worker-port=0",
               f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
               f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
               "--disable-usage-stats"]
        if self.memory_mb:
            cmd.append(f"--memory={self.memory_mb * 1024 * 1024}")
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=self.start_timeout)
        node = RayNode(name, nm_port, head)
        self.nodes.append(node)          # even when it failed: shutdown() still cleans up its processes
        if out.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        return node

    def start(self, attempts: int = 3) -> "LocalRayCluster":
        """Start the head; ``ray start`` gives a raylet 30 s to register, which a heavily loaded machine can
        miss: then its processes are killed and it is started again (up to ``attempts`` times)."""
        for k in range(attempts):
            try:
                self._start(["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--dashboard-port={free_port()}", f"--temp-dir={self.temp_dir}"],
                            "head", True, self.num_cpus, None)
                return self
            except RuntimeError:
                self.shutdown(keep_dir=True)
                self.nodes.clear()
                if k == attempts - 1:
                    raise
            except BaseException:
                self.shutdown()
                raise
        return self

    def driver_env(self) -> dict[str, str]:
        """Environment variables a driver (``ray.init(address=cluster.address)``) needs in this process."""
        return {k: v for k, v in FAST_FAILURE_ENV.items() if k == "RAY_AUTH_MODE"}

    def add_node(self, num_cpus: float | None = None, resources: dict | None = None,
                 attempts: int = 3) -> RayNode:
        """Start a worker node (its own raylet) joined to the head (retried like :meth:`start`)."""
        for k in range(attempts):
            try:
                return self._start([f"--address={self.address}"], f"worker-{len(self.nodes)}", False,
                                   self.num_cpus if num_cpus is None else num_cpus, resources)
            except RuntimeError:
                failed = self.nodes.pop()
                if self.raylet_pid(failed) is not None:
                    self.kill_node(failed)
                if k == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def raylet_pid(self, node: RayNode) -> int | None:
        for d in os.listdir("/proc"):
            if d.isdigit():
                cl = _cmdline(int(d))
                if "raylet" in cl and f"--node_manager_port={node.node_manager_port}" in cl \
                        and self.temp_dir in cl:
                    return int(d)
        return None

    def kill_node(self, node: RayNode) -> list[int]:
        """SIGKILL ``node``'s raylet and every process under it (its workers, agents): the node is gone."""
        pid = self.raylet_pid(node)
        if pid is None:
            raise RuntimeError(f"no raylet found for Ray node {node.name}")
        pids = _tree([pid])
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.killed = True
        return pids

    def _own_pids(self) -> list[int]:
        roots = [int(d) for d in os.listdir("/proc") if d.isdigit() and self.temp_dir in _cmdline(int(d))]
        return [p for p in _tree(roots) if p != os.getpid()]

    def shutdown(self, grace: float = 5.0, keep_dir: bool = False) -> None:
        """Stop this cluster's processes (SIGTERM, then SIGKILL after ``grace`` s) and remove its temp dir."""
        pids = self._own_pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and
                                                       "zombie" not in _state(p) for p in pids):
                time.sleep(0.1)
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and "zombie" not in _state(p)]
            if not pids:
                break
        if not keep_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return ""
