"""TLS files: precise errors at start-up, reload on change, and the old pair kept on a bad rotation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autoscaler.services.tls import TlsConfigError, TlsSettings, server_credentials
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
    files: TlsSettings, broken: str, content: bytes | None, fragments: tuple[str, ...]
) -> None:
    path: Path = getattr(files, broken)
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(TlsConfigError) as raised:
        server_credentials(files)
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_mutual_means_a_client_ca(files: TlsSettings) -> None:
    assert files.mutual
    assert not TlsSettings(files.cert_file, files.key_file).mutual
