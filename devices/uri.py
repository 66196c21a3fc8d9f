"""The one URI parser: device URIs, broker and coordinator URLs, stream sources, deploy targets.

:func:`parse_uri` splits ``scheme://[user[:password]@]host[:port]/path?key=value&...`` into a :class:`Uri`
(scheme lower-cased, user/password/path percent-decoded, the query as ordered pairs) with bounds: at most
:data:`MAX_URI_CHARS` characters and :data:`MAX_QUERY_PARAMS` options, a key given twice is refused (which
value would win is a guess). :func:`parse_query` does the same for an opaque URI's options
(``sim:plate?unit=2``).

Every error is a ``ValueError`` that names the URI *redacted* (:func:`redact_uri`: the password of
``user:password@`` and secret query values masked), so a secret never reaches a log or a traceback, and
``repr(Uri)`` is redacted too. The redaction helpers live here, below every layer that records URIs;
:mod:`pat_runtime.redact` re-exports them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

#: query parameters whose values are secrets (compared case-insensitively)
SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "pass", "token", "secret", "api_key", "apikey",
                           "access_token", "auth"})
MASK = "***"
#: longest URI accepted, and most query options
MAX_URI_CHARS = 4096
MAX_QUERY_PARAMS = 64

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


# ---------------------------------------------------------------------------------------------------
# Redaction (never raises)
# ---------------------------------------------------------------------------------------------------
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


def has_secret(uri: str) -> bool:
    """Whether ``uri`` carries a password (``user:pass@``) or a secret query parameter."""
    return redact_uri(uri) != uri


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


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------
def parse_query(query: str, *, where: str = "URI", keep_blank: bool = False) -> tuple[tuple[str, str], ...]:
    """``"a=1&b=x"`` -> ``(("a", "1"), ("b", "x"))``: at most :data:`MAX_QUERY_PARAMS` options, no key twice.

    ``where`` names the URI in errors (pass it redacted); ``keep_blank`` keeps ``key=`` (value ``""``).
    """
    try:
        pairs = parse_qsl(query, keep_blank_values=keep_blank, max_num_fields=MAX_QUERY_PARAMS)
    except ValueError:
        raise ValueError(f"{where}: more than {MAX_QUERY_PARAMS} options") from None
    seen: set[str] = set()
    for k, _ in pairs:
        if k in seen:
            raise ValueError(f"{where}: option {k!r} is given more than once")
        seen.add(k)
    return tuple(pairs)


@dataclass(frozen=True)
class Uri:
    """A parsed URI (see :func:`parse_uri`); ``text`` is the URI as given (it may hold a secret: use
    :attr:`redacted` to show it)."""

    text: str = field(repr=False)
    scheme: str
    host: str | None
    port: int | None
    #: the path, percent-decoded, without the leading and trailing ``/`` (a node id, a topic)
    path: str
    query: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: ``[user[:password]@]host[:port]`` and the path as written
    netloc: str = field(default="", repr=False)
    raw_path: str = field(default="", repr=False)

    @property
    def options(self) -> dict[str, str]:
        return dict(self.query)

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    @property
    def redacted(self) -> str:
        return redact_uri(self.text)

    @property
    def hostport(self) -> str:
        """``host:port`` (IPv6 hosts bracketed), without credentials."""
        host = f"[{self.host}]" if self.host and ":" in self.host else (self.host or "")
        return f"{host}:{self.port}" if self.port is not None else host

    def geturl(self, *, path: str | None = None, query: list[tuple[str, str]] | tuple | None = None) -> str:
        """The URI rebuilt (credentials kept), with ``path`` and/or ``query`` replaced (``""``/``()`` removes)."""
        parts = urlsplit(self.text)
        if path is not None:
            parts = parts._replace(path=path)
        if query is not None:
            parts = parts._replace(query=urlencode(list(query)))
        return urlunsplit(parts)

    def __repr__(self) -> str:
        return f"Uri({self.redacted!r})"


def parse_uri(uri: str, *, schemes: tuple[str, ...] | None = None, what: str = "URI",
              keep_blank: bool = False) -> Uri:
    """Parse ``uri`` (see the module docstring); ``schemes`` lists the accepted ones (lower case).

    Errors (``ValueError``) start with ``what`` and the redacted URI: a non-string, too long, an unaccepted
    scheme, a bad port, too many options, an option given twice.
    """
    if not isinstance(uri, str):
        raise ValueError(f"{what} must be a string, got {type(uri).__name__}")
    shown = redact_uri(uri)
    if len(uri) > MAX_URI_CHARS:
        raise ValueError(f"{what} {shown[:80]!r}... is longer than {MAX_URI_CHARS} characters")
    try:
        u = urlsplit(uri)
        port = u.port
    except ValueError as e:
        raise ValueError(f"bad port in {what} {shown!r}: {e}") from None
    scheme = u.scheme.lower()
    if schemes is not None and scheme not in schemes:
        raise ValueError(f"{what} {shown!r}: scheme {scheme or '(none)'!r} is not one of {', '.join(schemes)}")
    return Uri(text=uri, scheme=scheme, host=u.hostname, port=port, path=unquote(u.path.strip("/")),
               query=parse_query(u.query, where=f"{what} {shown!r}", keep_blank=keep_blank),
               username=unquote(u.username) if u.username is not None else None,
               password=unquote(u.password) if u.password is not None else None, netloc=u.netloc,
               raw_path=u.path)


__all__ = ["MASK", "MAX_QUERY_PARAMS", "MAX_URI_CHARS", "SECRET_PARAMS", "Uri", "has_secret", "parse_query",
           "parse_uri", "redact_uri", "strip_credentials"]
