"""Run folders: ``runs/DEVICE-TASK-METHOD-sSEED-YYYYmmdd-HHMMSS[-N]``, never reusing an existing folder."""
from __future__ import annotations

import re
import time
from pathlib import Path

from pat_runtime.devices.uri import parse_uri, strip_credentials


def device_slug(device: str, limit: int = 60) -> str:
    """A file-name-safe form of a device URI, options included, credentials dropped."""
    if "://" in device:
        try:
            parts = parse_uri(device, keep_blank=True)
        except ValueError:           # not a URL we can take apart: never keep its credentials
            device = strip_credentials(device)
        else:
            query = "&".join(f"{k}={v}" for k, v in parts.query)
            device = f"{parts.scheme}://{parts.hostport}{parts.raw_path}{'?' + query if query else ''}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", device).strip("_")
    return slug[:limit].rstrip("_") or "device"


def new_run_dir(device: str, task: str, method: str, seed: int, root: str | Path = "runs") -> Path:
    """A fresh folder name under ``root`` (not created); a suffix ``-2``, ``-3``... if the name is taken."""
    base = Path(root) / f"{device_slug(device)}-{task}-{method}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
