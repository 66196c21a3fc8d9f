"""Issue 10: the import contracts hold (layers, no cycles) and each package's public API is importable."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["pat_runtime", "pat_runtime.devices", "pat_runtime.sims", "pat_runtime.transport",
            "pat_runtime.transport.zmq", "pat_runtime.transport.mqtt", "pat_runtime.edge", "pat_runtime.fleet",
            "pat_runtime.stream", "pat_runtime.trainers", "pat_runtime.twins", "pat_runtime.datasets",
            "pat_runtime.testing", "pat_runtime.cli"]


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter")
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "lint_imports.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves(name):
    mod = importlib.import_module(name)
    assert mod.__all__, f"{name} has an empty __all__"
    missing = [n for n in mod.__all__ if getattr(mod, n, None) is None]
    assert missing == []
    assert set(mod.__all__) <= set(dir(mod))


def test_package_imports_stay_cheap():
    """PEP 562 lazy names: importing the edge, transport and fleet packages loads no torch and no broker
    client until a name that needs one is used."""
    code = r"""
import json, sys
import pat_runtime, pat_runtime.edge, pat_runtime.transport, pat_runtime.devices
before = {m: m in sys.modules for m in ("torch", "zmq", "aiomqtt")}
pat_runtime.transport.ZmqCoordinator
after = {m: m in sys.modules for m in ("torch", "zmq", "aiomqtt")}
print(json.dumps([before, after]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = json.loads(r.stdout)
    assert before == {"torch": False, "zmq": False, "aiomqtt": False}
    assert after["zmq"] and not after["aiomqtt"]
