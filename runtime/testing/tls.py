"""Throw-away TLS material for tests: a CA, a broker certificate for 127.0.0.1 and client certificates.

Needs the ``cryptography`` package (a ``dev`` dependency)::

    pki = make_pki(tmp_path, clients=["coordinator", "node-1"])
    pki.ca, pki.server_cert, pki.server_key, pki.clients["node-1"]   # (cert, key) paths
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)
    return path


def _issue(cn: str, key, ca_key, ca_name: x509.Name, *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    return b.sign(ca_key, hashes.SHA256())


def make_pki(folder: str | Path, clients: Iterable[str] = (), ca_name: str = "pat-test-ca") -> Pki:
    """A CA, a broker certificate valid for 127.0.0.1 / localhost and one client certificate per name."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(ca_name, ca_key, ca_key, _name(ca_name), ca=True)
    ca = d / f"{ca_name}.crt"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki = Pki(ca, d / "server.crt", _write_key(d / "server.key", key := ec.generate_private_key(ec.SECP256R1())))
    pki.server_cert.write_bytes(_issue("127.0.0.1", key, ca_key, ca_cert.subject, server=True)
                                .public_bytes(serialization.Encoding.PEM))
    for cn in clients:
        k = ec.generate_private_key(ec.SECP256R1())
        cert = d / f"{cn}.crt"
        cert.write_bytes(_issue(cn, k, ca_key, ca_cert.subject).public_bytes(serialization.Encoding.PEM))
        pki.clients[cn] = (cert, _write_key(d / f"{cn}.key", k))
    return pki
