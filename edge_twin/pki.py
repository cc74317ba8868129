"""The gateway's own certificate authority, for the broker's TLS listener.

Devices in the home reach the broker over Wi-Fi: their passwords and the readings go
over TLS, to a server certificate issued by a CA made on this gateway at install. A
device trusts that CA only (its certificate, or its SHA-256 fingerprint, is what
``edge-twin provision`` shows for the device), so nothing else on the network can pose as
the gateway. ECDSA P-256: cheap on a Pi and supported by device TLS stacks (mbedTLS,
BearSSL, wolfSSL). The CA's key never leaves the gateway (0600, root).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_twin.broker import write_private
from edge_twin.errors import ConfigError

CA_DAYS = 20 * 365
SERVER_DAYS = 825  # what browsers and most TLS stacks accept for a leaf
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True, slots=True)
class Issued:
    cert: Path
    key: Path
    not_after: dt.datetime


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, data, mode)


def _write_pair(
    cert: Path,
    certificate: x509.Certificate,
    key: Path,
    private: ec.EllipticCurvePrivateKey,
    key_mode: int,
) -> None:
    """The key first (a certificate never stands without its key), then the certificate."""
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key, pem, key_mode)
    _write_private(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-twin"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the certificate {path}: {exc}") from exc


def fingerprint(path: Path) -> str:
    """SHA-256 of the certificate (DER), as devices and browsers show it: AB:CD:..."""
    return load_cert(path).fingerprint(hashes.SHA256()).hex(":").upper()


def create_ca(cert: Path, key: Path, gateway_id: str, now: dt.datetime) -> Issued:
    """A new CA (only when there is none: re-creating it would orphan every device)."""
    if cert.exists() or key.exists():
        raise ConfigError(f"a gateway CA exists already ({cert}): devices trust it; keep it")
    private = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"edge-twin gateway {gateway_id} CA")
    not_after = now + dt.timedelta(days=CA_DAYS)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), False)
        .sign(private, hashes.SHA256())
    )
    _write_pair(cert, certificate, key, private, 0o600)
    return Issued(cert, key, not_after)


def issue_server_cert(
    ca_cert: Path,
    ca_key: Path,
    cert: Path,
    key: Path,
    names: list[str],
    addresses: list[str],
    now: dt.datetime,
    key_mode: int = 0o640,
) -> Issued:
    """A TLS server certificate for the broker, for these host names and IP addresses."""
    if not names and not addresses:
        raise ConfigError("a server certificate needs a host name or an address")
    ca = load_cert(ca_cert)
    try:
        signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CA key {ca_key}: {exc}") from exc
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca_key} is not the gateway CA's key (ECDSA expected)")
    private = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    not_after = now + dt.timedelta(days=SERVER_DAYS)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0] if names else addresses[0]))
        .issuer_name(ca.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
        .sign(signer, hashes.SHA256())
    )
    _write_pair(cert, certificate, key, private, key_mode)
    return Issued(cert, key, not_after)


def needs_renewal(cert: Path, now: dt.datetime) -> bool:
    """Missing, or expiring within RENEW_BEFORE_DAYS."""
    if not cert.exists():
        return True
    return load_cert(cert).not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS)
