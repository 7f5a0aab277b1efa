"""TLS files: precise errors at start-up, reload on change, and the old pair kept on a bad rotation."""

from __future__ import annotations

import logging
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from autoscaler.services.tls import TlsConfigError, TlsSettings, server_credentials, ssl_contexts
from tests.integration.grpc_fixtures import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def files(pki: Pki, tmp_path: Path) -> TlsSettings:
    settings = TlsSettings(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")
    shutil.copyfile(pki.server.cert_file, settings.cert_file)
    shutil.copyfile(pki.server.key_file, settings.key_file)
    shutil.copyfile(pki.ca.issued.cert_file, tmp_path / "ca.crt")
    return settings


@pytest.mark.parametrize("load", [server_credentials, ssl_contexts], ids=["grpcio", "builtin"])
@pytest.mark.parametrize(
    ("broken", "content", "fragments"),
    [
        ("cert_file", None, ("TLS certificate", "tls.crt", "cannot read")),
        ("key_file", None, ("TLS private key", "tls.key", "cannot read")),
        ("client_ca_file", None, ("TLS client CA", "ca.crt", "cannot read")),
        ("cert_file", b"not a certificate", ("tls.crt", "no PEM block", "BEGIN CERTIFICATE")),
        ("key_file", b"-----BEGIN CERTIFICATE-----\n", ("tls.key", "no PEM block", "PRIVATE KEY")),
    ],
)
def test_bad_files_are_errors_naming_the_file(
    files: TlsSettings, broken: str, content: bytes | None, fragments: tuple[str, ...], load: Callable[..., object]
) -> None:
    path: Path = getattr(files, broken)
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(TlsConfigError) as raised:
        load(files)
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_mutual_means_a_client_ca(files: TlsSettings) -> None:
    assert files.mutual
    assert not TlsSettings(files.cert_file, files.key_file).mutual


def test_a_key_that_does_not_match_the_certificate_is_an_error_naming_both(files: TlsSettings, pki: Pki) -> None:
    shutil.copyfile(pki.other_server.key_file, files.key_file)
    with pytest.raises(TlsConfigError) as raised:
        ssl_contexts(files)
    assert "tls.crt" in str(raised.value)
    assert "tls.key" in str(raised.value)


def test_changed_files_are_reloaded_and_a_bad_rotation_keeps_the_old_pair(
    files: TlsSettings, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    contexts = ssl_contexts(files)
    first = contexts()
    assert contexts() is first  # unchanged files: the same context
    shutil.copyfile(pki.other_server.cert_file, files.cert_file)
    shutil.copyfile(pki.other_server.key_file, files.key_file)
    rotated = contexts()
    assert rotated is not first
    assert contexts() is rotated
    files.key_file.write_bytes(b"")  # a rotation caught half written
    with caplog.at_level(logging.WARNING):
        assert contexts() is rotated
    assert "keeping the previous TLS certificates" in caplog.text
    shutil.copyfile(pki.server.key_file, files.key_file)
    shutil.copyfile(pki.server.cert_file, files.cert_file)
    assert contexts() is not rotated


def test_contexts_require_http2_and_client_certificates(files: TlsSettings) -> None:
    context = ssl_contexts(files)()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    plain = ssl_contexts(TlsSettings(files.cert_file, files.key_file))()
    assert plain.verify_mode is ssl.CERT_NONE
