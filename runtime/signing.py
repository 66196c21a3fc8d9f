"""Ed25519 keys and trust for signed ``.pnn`` artifacts (with the ``cryptography`` library).

Checksums prove that an artifact is intact, not who made it: anyone can recompute them. A signature made
with a private key that only the model's owner holds proves origin, and an edge node accepts only
artifacts signed by a key on its *trusted-keys* list.

Files (default folder ``$PAT_HOME``, else ``~/.config/pat``; never inside a run folder or an artifact)::

    signing.key     the private key, PEM (PKCS#8), mode 0600 -- refused when group/other can read it
    signing.pub     the public key as one line: ``ed25519:BASE64 COMMENT``
    trusted_keys    one public key per line (``ed25519:BASE64 [comment]``, ``#`` comments); a ``.pub``
                    file is itself a valid trusted-keys file

What is signed: the bytes ``b"pat-pnn signature v1\\n" + manifest_sha256_hex`` (the artifact id). The
manifest holds the payload's sha256, so the signature covers every tensor and every manifest field.
"""
from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pat_runtime.devices.codes import ErrorCode
from pat_runtime.artifact_errors import ArtifactError
from pat_runtime.devices.errors import ArtifactFailure
from pat_runtime.files import atomic_write

PREFIX = "ed25519:"
SIGNED_CONTEXT = b"pat-pnn signature v1\n"
KEY_NAME = "signing.key"
PUB_NAME = "signing.pub"
TRUST_NAME = "trusted_keys"
#: files whose presence marks a run folder (outputs that get copied, shared and deployed)
_RUN_MARKERS = ("summary.json", "metrics.jsonl", "model.pnn", "model.json")


class KeyFileError(ArtifactFailure, ValueError):
    """A key or trusted-keys file that cannot be used (bad format, unsafe permissions, unsafe place)."""


def pat_home() -> Path:
    """``$PAT_HOME`` or ``~/.config/pat``: where ``pat keys`` keeps keys and the default trusted-keys list."""
    return Path(os.environ.get("PAT_HOME") or "~/.config/pat").expanduser()


def default_key_path() -> Path:
    return pat_home() / KEY_NAME


def default_trust_path() -> Path:
    return pat_home() / TRUST_NAME


def key_id(raw: bytes) -> str:
    """Short fingerprint of a public key (16 hex digits of its sha256)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(raw: bytes, comment: str = "") -> str:
    line = PREFIX + base64.b64encode(raw).decode("ascii")
    return f"{line} {comment}".rstrip()


def parse_public_key(text: str) -> bytes:
    """``ed25519:BASE64 [comment]`` -> the 32 raw key bytes; raises KeyFileError."""
    token = text.strip().split()[0] if text.strip() else ""
    if not token.startswith(PREFIX):
        raise KeyFileError(f"not an Ed25519 public key (expected '{PREFIX}BASE64'): {token[:40]!r}")
    try:
        raw = base64.b64decode(token[len(PREFIX):], validate=True)
    except ValueError:
        raise KeyFileError(f"public key {token[:40]!r} is not valid base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"public key {token[:40]!r} has {len(raw)} bytes, an Ed25519 key has 32")
    return raw


def signed_message(artifact_id: str) -> bytes:
    return SIGNED_CONTEXT + artifact_id.encode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key loaded from a file; :meth:`sign` signs an artifact id."""

    private: Ed25519PrivateKey
    path: Path | None = None

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_text(self) -> str:
        return public_key_text(self.public_raw)

    @property
    def key_id(self) -> str:
        return key_id(self.public_raw)

    def sign(self, artifact_id: str) -> bytes:
        return self.private.sign(signed_message(artifact_id))


def verify(public_raw: bytes, artifact_id: str, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, signed_message(artifact_id))
        return True
    except (InvalidSignature, ValueError):
        return False


class TrustedKeys:
    """The public keys an edge node accepts artifacts from. ``source`` names where they came from."""

    def __init__(self, keys: Iterable[bytes] = (), source: str = "(given)"):
        self.keys = frozenset(keys)
        self.source = source

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "(given)") -> "TrustedKeys":
        keys = []
        for n, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    keys.append(parse_public_key(line))
                except KeyFileError as e:
                    raise KeyFileError(f"{source}:{n}: {e}") from None
        return cls(keys, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrustedKeys":
        """Read a trusted-keys file; a missing file is an empty list (every artifact is then refused)."""
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            return cls((), str(p))
        except (OSError, UnicodeDecodeError) as e:
            raise KeyFileError(f"cannot read trusted keys {p}: {e}") from None
        return cls.from_lines(text.splitlines(), str(p))

    def __contains__(self, raw: bytes) -> bool:
        return raw in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def check(self, signer: bytes | None) -> None:
        """Raise ArtifactError unless ``signer`` (the verified signing key, or None) is trusted."""
        if signer is None:
            raise ArtifactError(ErrorCode.UNSIGNED,
                                "artifact is not signed; sign it with `pat keys sign MODEL` (or deploy "
                                "with `pat deploy`, which signs with your key) and list the public "
                                f"key in this node's trusted keys ({self.source})")
        if signer not in self.keys:
            hint = "no key is trusted" if not self.keys else f"{len(self.keys)} key(s) trusted"
            raise ArtifactError(ErrorCode.UNTRUSTED_KEY,
                                f"artifact is signed by key {key_id(signer)}, which is not in this "
                                f"node's trusted keys ({self.source}; {hint})")


# ----- key files -------------------------------------------------------------------------------------------
def check_key_location(directory: Path) -> None:
    """Refuse folders where a private key would travel with shared outputs (run folders, artifacts)."""
    d = directory.expanduser().resolve()
    for p in (d, *d.parents):
        if p.name == "runs" or p.suffix == ".pnn" or any((p / m).exists() for m in _RUN_MARKERS):
            raise KeyFileError(f"refusing to write a private key into {directory}: {p} looks like a run folder or "
                            f"an artifact (outputs get shared and deployed). Use the default {pat_home()} or "
                            f"another private folder")


def generate_key(directory: str | os.PathLike | None = None, comment: str = "", force: bool = False,
                 trust: bool = True) -> tuple[Path, Path, SigningKey]:
    """Create ``signing.key`` (0600) and ``signing.pub`` in ``directory`` (default :func:`pat_home`).

    With ``trust`` the public key is also appended to that folder's ``trusted_keys`` (this machine trusts
    its own key, so a local edge accepts what you sign). Returns (key path, public key path, key).
    """
    d = Path(directory).expanduser() if directory is not None else pat_home()
    check_key_location(d)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, pub_path = d / KEY_NAME, d / PUB_NAME
    if key_path.exists() and not force:
        raise KeyFileError(f"{key_path} exists; keep it (pat keys show) or pass --force to replace it "
                        f"(artifacts signed with the old key are then refused once it leaves the trusted lists)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    atomic_write(key_path, pem, mode=0o600)  # 0o600 whatever the umask
    key = SigningKey(private, key_path)
    pub_path.write_text(public_key_text(key.public_raw, comment or f"pat key {key.key_id}") + "\n")
    if trust:
        add_trusted(d / TRUST_NAME, key.public_raw, comment or f"pat key {key.key_id}")
    return key_path, pub_path, key


def load_signing_key(path: str | os.PathLike | None = None) -> SigningKey:
    """Load a private key file (default :func:`default_key_path`); refuse one that others can read."""
    p = Path(path).expanduser() if path is not None else default_key_path()
    try:
        st = p.stat()
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"no signing key at {p}: create one with `pat keys create`") from None
    except OSError as e:
        raise KeyFileError(f"cannot read signing key {p}: {e}") from None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"signing key {p} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                        f"run `chmod 600 {p}`")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{p} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{p} is not an Ed25519 key")
    return SigningKey(private, p)


def add_trusted(path: str | os.PathLike, raw: bytes, comment: str = "") -> bool:
    """Append a public key to a trusted-keys file (created if missing); False if it was already there."""
    p = Path(path).expanduser()
    if raw in TrustedKeys.from_file(p):
        return False
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        f.write(public_key_text(raw, comment) + "\n")
    return True
