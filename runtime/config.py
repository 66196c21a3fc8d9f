"""Run configuration files (``--config run.toml``) for the ``pat`` commands.

A config file holds a command's options by name (``lr = 0.02``, ``twin-samples = 512``, either spelling),
optionally under a table named after the command (``[train]``), so one file can serve several commands.
Precedence, lowest first: the option defaults, a base (e.g. the configuration of a run being resumed), the
file, then flags given on the command line. Values go through the same type and range checks as flags, so
``epochs = 0`` is refused exactly like ``--epochs 0``. :func:`write_toml` saves the resolved configuration
in the run folder; :func:`command_line` renders it as a shell-quoted, reproducible command.
"""
from __future__ import annotations

import math
import shlex
import tomllib
from pathlib import Path
from typing import Any

import typer

from pat_runtime.devices.errors import PatError

#: options that are about this invocation, not the run (never read from or written to a config)
NOT_CONFIG = {"config", "resume", "help"}


class ConfigError(PatError, ValueError):
    """A config file that cannot be used: unreadable, unknown keys, or values of the wrong type."""


def read_toml(path: str | Path, command: str | None = None) -> dict[str, Any]:
    """The options in ``path`` (the ``[command]`` table if there is one, else the top level)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    if command and isinstance(data.get(command), dict):
        data = data[command]
    return {k: v for k, v in data.items() if not isinstance(v, dict)}


def _source_is_cli(ctx: typer.Context, name: str) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def resolve(ctx: typer.Context, values: dict[str, Any], config: Path | None = None,
            base: dict[str, Any] | None = None, base_name: str = "base") -> dict[str, Any]:
    """``values`` (the command's parsed options) with ``base`` then ``config`` applied under the CLI flags."""
    params = {p.name: p for p in ctx.command.params if p.name not in NOT_CONFIG}
    layers: list[tuple[str, dict[str, Any]]] = []
    if base:
        layers.append((base_name, base))
    if config is not None:
        layers.append((f"config file {config}", read_toml(config, ctx.info_name)))
    out = dict(values)
    for where, layer in layers:
        for key, raw in layer.items():
            name = key.replace("-", "_")
            if name not in params:
                raise ConfigError(f"{where}: unknown option {key!r}; valid options: "
                                  f"{', '.join(sorted(n.replace('_', '-') for n in params))}")
            if _source_is_cli(ctx, name):
                continue
            try:
                out[name] = params[name].process_value(ctx, raw)
            except typer.BadParameter as e:
                raise ConfigError(f"{where}: {key} = {raw!r}: {e.message}") from None
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    return v


def config_values(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The resolved options worth recording (``None`` values left out: TOML has no null)."""
    names = [p.name for p in ctx.command.params if p.name not in NOT_CONFIG]
    return {n: _plain(values[n]) for n in names if n in values and values[n] is not None}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def dumps_toml(values: dict[str, Any], command: str | None = None) -> str:
    lines = [f"[{command}]"] if command else []
    lines += [f"{k.replace('_', '-')} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_toml(path: str | Path, values: dict[str, Any], command: str | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dumps_toml(values, command))
    return p


def command_line(ctx: typer.Context, values: dict[str, Any], prog: str = "pat",
                 skip: tuple[str, ...] = (), always: tuple[str, ...] = ()) -> str:
    """A shell-quoted command that reproduces ``values`` (options in ``always`` plus those that differ from
    their default)."""
    parts = [prog, ctx.info_name or ""]
    for p in ctx.command.params:
        if p.name in NOT_CONFIG or p.name in skip or p.name not in values or not getattr(p, "opts", None):
            continue
        v = values[p.name]
        if v is None or (p.name not in always and (v == p.default or str(v) == str(p.default))):
            continue
        if getattr(p, "is_flag", False):
            if v:
                parts.append(p.opts[0])
            elif p.secondary_opts:
                parts.append(p.secondary_opts[0])
            continue
        parts += [p.opts[0], str(_plain(v))]
    return shlex.join(parts)
