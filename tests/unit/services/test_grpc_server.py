"""Server lifecycle: binding errors, start/stop misuse and health on shutdown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.services.tls import TlsConfigError, TlsSettings
from tests.unit.services.fake_engine import FakeEngine


def loopback(port: int = 0, tls: TlsSettings | None = None) -> GrpcServerSettings:
    return GrpcServerSettings(host="127.0.0.1", port=port, tls=tls)


async def test_a_taken_port_is_an_error_naming_the_address() -> None:
    first = GrpcServer(FakeEngine(), loopback())
    port = await first.start()
    try:
        with pytest.raises(OSError, match=re.escape(f"127.0.0.1:{port}")):
            await GrpcServer(FakeEngine(), loopback(port)).start()
    finally:
        await first.stop(None)


async def test_start_twice_and_port_before_start_are_errors() -> None:
    server = GrpcServer(FakeEngine(), loopback())
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.port
    assert not server.serving
    await server.start()
    try:
        assert server.serving
        assert server.address == f"127.0.0.1:{server.port}"
        with pytest.raises(RuntimeError, match="already started"):
            await server.start()
    finally:
        await server.stop(None)
    assert not server.serving


async def test_missing_tls_files_fail_the_start(tmp_path: Path) -> None:
    tls = TlsSettings(tmp_path / "absent.crt", tmp_path / "absent.key")
    with pytest.raises(TlsConfigError, match=re.escape("absent.crt")):
        await GrpcServer(FakeEngine(), loopback(tls=tls)).start()


async def test_stop_before_start_is_harmless() -> None:
    await GrpcServer(FakeEngine(), loopback()).stop(0)
