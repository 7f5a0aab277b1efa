"""Server-side TLS and mTLS for the gRPC server, reloaded when the files change.

KEDA's trigger options map onto these files: its `caCert` must trust `cert_file`, and
when `client_ca_file` is set every client must present a certificate it signed, which
KEDA sends from `tlsClientCert`/`tlsClientKey`. Certificates mounted from a Secret
(cert-manager) are rotated in place, so the files are checked before each new
handshake and reloaded when they change; a half-written rotation keeps the old ones.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

_log = logging.getLogger(__name__)
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY_SUFFIX = b"PRIVATE KEY-----"


class TlsConfigError(ValueError):
    """A TLS file is missing, unreadable or not PEM; the message names the file."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: Path
    """PEM server certificate chain; its SAN must match the host in KEDA's scalerAddress."""
    key_file: Path
    """PEM private key of cert_file."""
    client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."""

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


@dataclass(frozen=True, slots=True)
class _LoadedFiles:
    versions: tuple[tuple[int, int], ...]
    configuration: grpc.ServerCertificateConfiguration


def _read_pem(path: Path, role: str, marker: bytes) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"TLS {role} {path}: cannot read: {error.strerror or error}") from error
    if marker not in data:
        raise TlsConfigError(f"TLS {role} {path}: no PEM block containing {marker.decode()!r}")
    return data


def _version(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_mtime_ns, stat.st_size)


class _ReloadingCertificates:
    """Supplies grpc's certificate fetcher: a new configuration when the files changed."""

    def __init__(self, settings: TlsSettings) -> None:
        self._settings = settings
        self._paths = [settings.cert_file, settings.key_file]
        if settings.client_ca_file is not None:
            self._paths.append(settings.client_ca_file)
        self._lock = threading.Lock()  # grpc calls the fetcher from its own threads
        self._loaded = self._load()

    @property
    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._loaded.configuration

    def _load(self) -> _LoadedFiles:
        versions = tuple(_version(path) for path in self._paths)
        settings = self._settings
        cert = _read_pem(settings.cert_file, "certificate", _PEM_CERTIFICATE)
        key = _read_pem(settings.key_file, "private key", _PEM_PRIVATE_KEY_SUFFIX)
        client_ca = (
            _read_pem(settings.client_ca_file, "client CA", _PEM_CERTIFICATE)
            if settings.client_ca_file is not None
            else None
        )
        configuration = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)
        return _LoadedFiles(versions=versions, configuration=configuration)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            if tuple(_version(path) for path in self._paths) == self._loaded.versions:
                return None
            try:
                self._loaded = self._load()
            except TlsConfigError as error:
                _log.warning("keeping the previous TLS certificates: %s", error)
                return None
            _log.info("reloaded TLS certificates from %s", self._settings.cert_file)
            return self._loaded.configuration


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port`; raises TlsConfigError naming a bad file."""
    certificates = _ReloadingCertificates(settings)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial, certificates, require_client_authentication=settings.mutual
    )
