"""HTTPS for the public port: the certificate an operator passes, or a self-signed one made
at start for this host's names and addresses (a phone on the same network can then reach
the page in a secure context, where browsers grant the microphone).

The self-signed key and certificate live in a private temporary directory for the life of
the process; the caller prints the certificate's SHA-256 fingerprint, which a person compares
with the one their browser shows before accepting the warning.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 30
ANY = {"0.0.0.0", "::", ""}  # noqa: S104  (listen addresses, not a bind here)


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the DER certificate, "AB:CD:…"
    names: tuple[str, ...]  # the DNS names and IP addresses it is valid for


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def host_names(listen: str) -> list[str]:
    """What a browser may call this server by: the listen address (every interface's when
    it listens on all), the loopback addresses, localhost and the host name."""
    names = ["localhost", socket.gethostname(), "127.0.0.1", "::1"]
    if listen in ANY:
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    names.append(a.address.split("%")[0])  # no IPv6 zone
    else:
        names.append(listen)
    return list(dict.fromkeys(n for n in names if n))


def lan_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback: where a phone on the network calls."""
    found = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                found.append(a.address)
    return found


def self_signed(names: list[str], directory: Path | None = None) -> Certificate:
    """A fresh P-256 key and a certificate for ``names`` (IP addresses as such), valid from
    a minute ago for ``VALID_DAYS``."""
    directory = directory or Path(tempfile.mkdtemp(prefix="dragoman-tls-"))  # 0700
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dragoman (self-signed)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # Its own CA: a client may trust exactly this certificate (tests do).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Certificate(cert_path, key_path, fingerprint(cert), tuple(names))


def given(cert: Path, key: Path) -> Certificate:
    """The operator's certificate (its first PEM block is the server's own)."""
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n.value) for n in sans)
    except x509.ExtensionNotFound:
        names = ()
    return Certificate(cert, key, fingerprint(leaf), names)
