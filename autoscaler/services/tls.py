"""Server-side TLS and mTLS for the gRPC server, reloaded when the files change.

KEDA's trigger options map onto these files: its `caCert` must trust `cert_file`, and
when `client_ca_file` is set every client must present a certificate it signed, which
KEDA sends from `tlsClientCert`/`tlsClientKey`. Certificates mounted from a Secret
(cert-manager) are rotated in place, so the files are checked before each new
handshake and reloaded when they change; a half-written rotation keeps the old ones.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import grpc

_log = logging.getLogger(__name__)
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY_SUFFIX = b"PRIVATE KEY-----"
_Built = TypeVar("_Built")


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
class _PemFiles:
    cert: bytes
    key: bytes
    client_ca: bytes | None


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


class _Reloading(Generic[_Built]):
    """What `build` makes of the PEM files, made again when a file changes.

    A change that does not load (a rotation written halfway) keeps the previous result.
    """

    def __init__(self, settings: TlsSettings, build: Callable[[_PemFiles], _Built]) -> None:
        self._settings = settings
        self._build = build
        self._paths = [settings.cert_file, settings.key_file]
        if settings.client_ca_file is not None:
            self._paths.append(settings.client_ca_file)
        self._lock = threading.Lock()  # grpc calls its fetcher from its own threads
        self._versions = self._current_versions()
        self.current = build(self._read())

    def _current_versions(self) -> tuple[tuple[int, int], ...]:
        return tuple(_version(path) for path in self._paths)

    def _read(self) -> _PemFiles:
        settings = self._settings
        return _PemFiles(
            cert=_read_pem(settings.cert_file, "certificate", _PEM_CERTIFICATE),
            key=_read_pem(settings.key_file, "private key", _PEM_PRIVATE_KEY_SUFFIX),
            client_ca=(
                _read_pem(settings.client_ca_file, "client CA", _PEM_CERTIFICATE)
                if settings.client_ca_file is not None
                else None
            ),
        )

    def reload(self) -> bool:
        """True when the files changed and their new contents are now `current`."""
        with self._lock:
            versions = self._current_versions()
            if versions == self._versions:
                return False
            try:
                built = self._build(self._read())
            except (TlsConfigError, ssl.SSLError, ValueError) as error:
                _log.warning("keeping the previous TLS certificates: %s", error)
                return False
            self._versions, self.current = versions, built
            _log.info("reloaded TLS certificates from %s", self._settings.cert_file)
            return True


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials:
    """Credentials for grpc.aio's `add_secure_port`; raises TlsConfigError naming a bad file."""

    def configuration(files: _PemFiles) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(files.key, files.cert)], root_certificates=files.client_ca)

    certificates = _Reloading(settings, configuration)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        return certificates.current if certificates.reload() else None

    return grpc.dynamic_ssl_server_credentials(
        certificates.current, fetch, require_client_authentication=settings.mutual
    )
