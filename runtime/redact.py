"""One place that removes secrets from URIs before the project records them.

Device URIs and broker URLs end up in run folder names, ``summary.json``, plot titles, ``.pnn`` manifests
(deployed and retained on the broker), logs and error messages. Credentials belong in a file or the
environment (see :mod:`pat_runtime.transport.mqtt.credentials`), but a URL such as ``mqtt://user:pass@host``
still works for compatibility; everything that writes a URI down passes it through :func:`redact_uri`::

    >>> redact_uri("mqtt://coord:hunter2@10.0.0.5:1883/node-1?prefix=lab&token=abc")
    'mqtt://coord:***@10.0.0.5:1883/node-1?prefix=lab&token=***'
    >>> redact_uri("sim:plate?unit=2")
    'sim:plate?unit=2'
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

#: query parameters whose values are secrets (compared case-insensitively)
SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "pass", "token", "secret", "api_key", "apikey",
                           "access_token", "auth"})
MASK = "***"

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


def has_secret(uri: str) -> bool:
    """Whether ``uri`` carries a password (``user:pass@``) or a secret query parameter."""
    return redact_uri(uri) != uri


def redact_uri(uri: str) -> str:
    """``uri`` with the password of ``user:password@`` and secret query values replaced by ``***``.

    Anything that does not parse as a URL is returned with a ``user:pass@``-looking part masked, so the
    function never raises and never returns more than it got.
    """
    if not isinstance(uri, str):
        return uri
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", uri, count=1)
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.query:
        return text
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k.lower() in SECRET_PARAMS for k, _ in query):
        return text
    masked = "&".join(f"{k}={MASK if k.lower() in SECRET_PARAMS else v}" for k, v in query)
    return urlunsplit(parts._replace(query=masked))


def strip_credentials(uri: str) -> str:
    """``uri`` without any ``user[:password]@`` part and without secret query parameters (for names)."""
    text = redact_uri(uri)
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    if parts.query:
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() not in SECRET_PARAMS]
        parts = parts._replace(query="&".join(f"{k}={v}" for k, v in query))
    return urlunsplit(parts)
