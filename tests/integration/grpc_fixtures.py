"""Test certificates: two CAs and their leaves for the gRPC server's TLS and mTLS, and the pieces to issue others."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path

    @property
    def cert(self) -> bytes:
        return self.cert_file.read_bytes()

    @property
    def key(self) -> bytes:
        return self.key_file.read_bytes()


@dataclass(frozen=True)
class Authority:
    issued: Issued
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    ca: Authority
    other_ca: Authority
    server: Issued  # signed by ca, valid for localhost and 127.0.0.1
    other_server: Issued  # signed by other_ca, for certificate rotation
    client: Issued  # signed by ca
    foreign_client: Issued  # signed by other_ca
    expired_client: Issued  # signed by ca, expired yesterday


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return Issued(cert_file, key_file)


def issue_authority(directory: Path, stem: str, now: dt.datetime) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{stem} test CA"))
        .issuer_name(_name(f"{stem} test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(_write(directory, stem, certificate, key), certificate, key)


def issue_leaf(
    directory: Path,
    stem: str,
    issuer: Authority,
    *,
    usage: x509.ObjectIdentifier,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(issuer.private_key, hashes.SHA256())
    return _write(directory, stem, certificate, key)


def make_pki(directory: Path) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca, other_ca = issue_authority(directory, "ca", now), issue_authority(directory, "other-ca", now)
    valid = {"not_before": now - _DAY, "not_after": now + 10 * _DAY}
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    return Pki(
        ca=ca,
        other_ca=other_ca,
        server=issue_leaf(directory, "server", ca, usage=server, **valid),
        other_server=issue_leaf(directory, "other-server", other_ca, usage=server, **valid),
        client=issue_leaf(directory, "client", ca, usage=client, **valid),
        foreign_client=issue_leaf(directory, "foreign-client", other_ca, usage=client, **valid),
        expired_client=issue_leaf(
            directory, "expired-client", ca, usage=client, not_before=now - 10 * _DAY, not_after=now - _DAY
        ),
    )
