"""The one import namespace (issue 10): pyproject maps ``pat_runtime`` onto the folders on disk."""
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_on_disk() -> set[str]:
    roots = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, folder in roots.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            if any(part.startswith(".") or part == "__pycache__" for part in rel):
                continue
            found.add(".".join((name, *rel)))
    return found


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == _packages_on_disk()
    assert all(p == "pat_runtime" or p.startswith("pat_runtime.") for p in listed)


def test_installed_names_and_entry_points():
    """Run outside the checkout, so only what is installed is importable: pat_runtime is, the old generic
    top-level names are not; the console script and the device schemes point into pat_runtime."""
    code = r"""
import importlib.util, json
from importlib.metadata import entry_points
out = {
    "old": {n: importlib.util.find_spec(n) is not None for n in ("runtime", "devices", "edge", "sims")},
    "files": [importlib.util.find_spec(n).origin for n in ("pat_runtime", "pat_runtime.devices", "pat_runtime.edge",
                                                           "pat_runtime.sims")],   # without importing torch
    "schemes": {e.name: e.value for e in entry_points(group="pat_runtime.devices")},
    "scripts": [e.value for e in entry_points(group="console_scripts", name="pat")],
}
print(json.dumps(out))
"""
    import json

    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    assert out["old"] == {"runtime": False, "devices": False, "edge": False, "sims": False}
    assert [Path(f).parent.name for f in out["files"]] == ["runtime", "devices", "edge", "sims"]
    assert out["scripts"] == ["pat_runtime.cli:main"]
    assert out["schemes"]["sim"] == "pat_runtime.sims.uri:sim_device"
    assert out["schemes"]["zmq"] == out["schemes"]["mqtt"] == "pat_runtime.transport.remote:connect_uri"
    assert all(v.startswith("pat_runtime.") for v in out["schemes"].values())


def test_no_source_imports_an_old_top_level_name():
    """Inside the checkout ``import runtime`` would still resolve (the repo root is on sys.path), so a
    leftover old import would pass here and fail installed: none may remain."""
    import re

    old = re.compile(r"^\s*(?:from|import)\s+(?:runtime|devices|edge|sims)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in ("runtime", "devices", "edge", "sims", "tests", "bench")
                 for p in (ROOT / folder).rglob("*.py") if old.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
