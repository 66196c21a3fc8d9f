"""MQTT credentials and TLS settings from a file or the environment, never from recorded URLs.

Where a client's settings come from (first found wins, per setting)::

    username  URL user part  | credentials file `username`  | $PAT_MQTT_USERNAME
    password  credentials file `password` | $PAT_MQTT_PASSWORD | URL password (deprecated: warned)
    ca        ?ca=FILE       | credentials file `ca`        | $PAT_MQTT_CA        (mqtts:// only)
    cert, key ?cert=&key=    | credentials file `cert`/`key`| $PAT_MQTT_CERT / $PAT_MQTT_KEY

The credentials file is named by ``?credentials=FILE`` or ``$PAT_MQTT_CREDENTIALS``; it is TOML::

    username = "node-1"
    password = "..."            # the broker user's password (``pat broker-config`` writes these files)
    ca = "ca.crt"               # optional, mqtts://: CA that signed the broker's certificate
    cert = "node-1.crt"         # optional, mqtts://: client certificate and its key
    key = "node-1.key"

Relative TLS paths are relative to the credentials file. A file readable by group/others is refused (it
holds a password). A password in the URL still works but logs a warning: URLs end up in run folders,
summaries and manifests (they are redacted there, see :mod:`pat_runtime.redact`, but should not carry it).
"""
from __future__ import annotations

import logging
import os
import ssl
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pat_runtime.devices.errors import TransportError

log = logging.getLogger("pat_runtime.transport.mqtt")

ENV_USERNAME = "PAT_MQTT_USERNAME"
ENV_PASSWORD = "PAT_MQTT_PASSWORD"
ENV_CREDENTIALS = "PAT_MQTT_CREDENTIALS"
ENV_CA, ENV_CERT, ENV_KEY = "PAT_MQTT_CA", "PAT_MQTT_CERT", "PAT_MQTT_KEY"
_KNOWN = frozenset({"username", "password", "ca", "cert", "key"})
_warned: set[str] = set()


class CredentialsError(TransportError, ValueError):
    """A credentials file that cannot be used (missing, unreadable, group/world-readable, bad TOML)."""


@dataclass(frozen=True)
class Credentials:
    """What a client logs in with. ``password`` is never shown by ``repr``."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    source: str = "none"      # where the password came from: none | file | env | url

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: verifies the broker against ``ca`` (system CAs when None), presents ``cert``."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        elif self.key:
            raise CredentialsError("a TLS client key was given without its certificate (cert)")
        return ctx


def read_credentials_file(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML credentials file (TLS paths made absolute); refuses group/world-readable files."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise CredentialsError(f"cannot read MQTT credentials file {p}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CredentialsError(f"MQTT credentials file {p} is not valid TOML: {e}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO) and "password" in data:
        raise CredentialsError(f"MQTT credentials file {p} holds a password but is readable by others "
                               f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {p}")
    unknown = set(data) - _KNOWN
    if unknown:
        raise CredentialsError(f"MQTT credentials file {p}: unknown keys {sorted(unknown)} "
                               f"(expected {sorted(_KNOWN)})")
    for k in ("ca", "cert", "key"):
        if data.get(k):
            data[k] = str((p.parent / str(data[k])).expanduser())
    return {k: str(v) for k, v in data.items() if v is not None}


def resolve_credentials(username: str | None, password: str | None, options: Mapping[str, str],
                        *, where: str = "the broker", env: Mapping[str, str] | None = None) -> Credentials:
    """Combine URL parts, the credentials file and the environment (see the module docstring)."""
    env = os.environ if env is None else env
    path = options.get("credentials") or env.get(ENV_CREDENTIALS)
    file = read_credentials_file(path) if path else {}
    user = username or file.get("username") or env.get(ENV_USERNAME) or None
    if file.get("password"):
        pw, source = file["password"], "file"
    elif env.get(ENV_PASSWORD):
        pw, source = env[ENV_PASSWORD], "env"
    elif password is not None:
        pw, source = password, "url"
        if where not in _warned:
            _warned.add(where)
            log.warning("the MQTT URL for %s carries a password: URLs get recorded (run folders, summaries, "
                        "manifests; redacted there); use --credentials FILE or $%s instead",
                        where, ENV_PASSWORD)
    else:
        pw, source = None, "none"
    return Credentials(user, pw, options.get("ca") or file.get("ca") or env.get(ENV_CA) or None,
                       options.get("cert") or file.get("cert") or env.get(ENV_CERT) or None,
                       options.get("key") or file.get("key") or env.get(ENV_KEY) or None, source)
