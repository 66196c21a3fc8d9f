"""``pat train`` checkpoints: one atomic ``checkpoint.pt`` per run folder, rewritten after every epoch.

It holds what a resumed run needs to continue exactly where the last finished epoch left off: the
configuration, the device spec, the fitted twin (so resuming does not re-measure it), the model, the
model of the best-validation epoch so far (so a resumed run still selects among all its epochs), the
optimizer and LR-schedule state, the metric history and the RNG states. It loads with
``torch.load(weights_only=True)``, so a checkpoint file can never run code.

:func:`check_compatible` refuses to resume a checkpoint made for another device, task, method or model
shape, and says which setting differs.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pat_runtime.artifact import atomic_write

FORMAT = "pat-train-checkpoint/1"
FILENAME = "checkpoint.pt"


def to_tensors(obj: Any) -> Any:
    """Recursively replace numpy arrays by tensors (so ``weights_only`` loading works)."""
    if isinstance(obj, dict):
        return {k: to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_tensors(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


#: settings that must match between a checkpoint and the run resuming it
MUST_MATCH = ("device", "task", "method", "layers", "hybrid", "channels", "twin", "twin_path", "val_fraction")


def checkpoint_path(run_dir: str | Path) -> Path:
    p = Path(run_dir)
    return p if p.suffix == ".pt" else p / FILENAME


def save_checkpoint(run_dir: str | Path, *, config: dict[str, Any], spec: dict[str, Any] | None, epoch: int,
                    model: torch.nn.Module, method: Any, history: list[dict[str, Any]],
                    twin: dict[str, Any] | None,
                    best_model: dict[str, torch.Tensor] | None = None) -> Path:
    state: dict[str, Any] = {
        "format": FORMAT, "config": dict(config), "spec": spec, "epoch": int(epoch),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "history": list(history), "twin": twin,
        "rng": {"torch": torch.get_rng_state(), "numpy": _np_state()},
    }
    if best_model is not None:
        state["best_model"] = {k: v.detach().clone() for k, v in best_model.items()}
    for name in ("opt", "sched"):
        obj = getattr(method, name, None)
        if obj is not None:
            state[name] = obj.state_dict()
    for name in ("k",):
        if hasattr(method, name):
            state[f"method_{name}"] = getattr(method, name)
    gen = getattr(method, "gen", None)
    if isinstance(gen, torch.Generator):
        state["method_gen"] = gen.get_state()
    buf = io.BytesIO()
    torch.save(to_tensors(state), buf)
    path = checkpoint_path(run_dir)
    atomic_write(path, buf.getvalue())
    return path


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise ValueError(f"cannot resume: no checkpoint at {path} (pat train writes one after each epoch)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot resume: {path} is unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"cannot resume: {path} is not a pat train checkpoint")
    return state


def check_compatible(state: dict[str, Any], config: dict[str, Any], spec: dict[str, Any] | None,
                     where: str) -> None:
    """``ValueError`` naming the first setting that differs between the checkpoint and this run."""
    old = state["config"]
    for key in MUST_MATCH:
        if old.get(key) != config.get(key):
            raise ValueError(f"cannot resume {where}: it was trained with {key}={old.get(key)!r}, this run has "
                             f"{key}={config.get(key)!r} (resume with the original {key}, or start a new run)")
    if spec is not None and state.get("spec") is not None:
        for key in ("kind", "in_dim", "param_dim", "out_dim"):
            if state["spec"].get(key) != spec.get(key):
                raise ValueError(f"cannot resume {where}: its device had {key}={state['spec'].get(key)!r}, this "
                                 f"device has {key}={spec.get(key)!r}")


def restore(state: dict[str, Any], model: torch.nn.Module, method: Any) -> None:
    """Load model, optimizer, schedule and RNG states from ``state`` into a freshly built run."""
    model.load_state_dict(state["model"])
    for name in ("opt", "sched"):
        obj = getattr(method, name, None)
        if obj is not None and name in state:
            obj.load_state_dict(state[name])
    if "method_k" in state:
        method.k = int(state["method_k"])
    if "method_gen" in state and isinstance(getattr(method, "gen", None), torch.Generator):
        method.gen.set_state(state["method_gen"])
    torch.set_rng_state(state["rng"]["torch"])
    st = state["rng"]["numpy"]
    np.random.set_state((st[0], np.asarray(st[1], dtype=np.uint32), int(st[2]), int(st[3]), float(st[4])))


def _np_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.astype(np.int64), int(pos), int(has_gauss), float(cached)]
