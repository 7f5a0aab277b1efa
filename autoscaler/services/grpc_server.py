"""The gRPC server KEDA connects to: the scaler, health checking and reflection.

Shutdown order (the daemon calls `stop(grace)` on SIGTERM): health turns NOT_SERVING
first so probes and load balancers stop sending new work, then in-flight calls get
`grace` seconds to finish before the remaining ones are cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from autoscaler.engine.api import EngineView
from autoscaler.services.grpc_scaler import (
    SERVICE_NAME,
    ExternalScalerService,
    RequestObserver,
    ScalerServiceSettings,
    add_to_server,
)
from autoscaler.services.tls import TlsSettings, server_credentials

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GrpcServerSettings:
    host: str = "0.0.0.0"
    port: int = 9100
    """0 picks a free port; `GrpcServer.port` tells which."""
    tls: TlsSettings | None = None
    """None serves plaintext (KEDA's default, with no caCert/tlsClientCert set)."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest request or response; scalerMetadata is small, so this only bounds abuse."""
    max_concurrent_streams: int = 16_384
    """HTTP/2 streams per connection; KEDA multiplexes every ScaledObject on one connection."""
    max_concurrent_rpcs: int | None = None
    """Calls in flight across the server before new ones get RESOURCE_EXHAUSTED; None is unbounded."""


class GrpcServer:
    """Owns one grpc.aio server; create and use it inside the daemon's event loop."""

    def __init__(
        self,
        engine: EngineView,
        settings: GrpcServerSettings | None = None,
        *,
        service_settings: ScalerServiceSettings | None = None,
        observer: RequestObserver | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`clock` reads the engine's clock; see `ExternalScalerService`."""
        self._settings = settings or GrpcServerSettings()
        self._service = ExternalScalerService(engine, settings=service_settings, observer=observer, clock=clock)
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._port: int | None = None
        self._shutting_down = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the gRPC server has not been started")
        return self._port

    @property
    def serving(self) -> bool:
        """Started and not yet shutting down: what health checks report as SERVING."""
        return self._server is not None and not self._shutting_down

    @property
    def address(self) -> str:
        return f"{self._settings.host}:{self.port}"

    async def start(self) -> int:
        """Bind, start serving and report SERVING; return the bound port."""
        if self._server is not None:
            raise RuntimeError("the gRPC server is already started")
        settings = self._settings
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
            ("grpc.so_reuseport", 0),  # a second daemon on the same port must fail, not share it
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=settings.max_concurrent_rpcs)
        add_to_server(self._service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        bind = f"{settings.host}:{settings.port}"
        try:
            port: int
            if settings.tls is None:
                port = server.add_insecure_port(bind)
            else:
                port = server.add_secure_port(bind, server_credentials(settings.tls))
        except RuntimeError as error:
            raise OSError(f"gRPC server cannot listen on {bind}: {error}") from error
        if port == 0:
            raise OSError(f"gRPC server cannot listen on {bind}")
        await server.start()
        self._server, self._port = server, port
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        mode = "plaintext" if settings.tls is None else ("mTLS" if settings.tls.mutual else "TLS")
        _log.info("gRPC external scaler listening on %s:%d (%s)", settings.host, port, mode)
        return port

    async def mark_not_serving(self) -> None:
        """Report NOT_SERVING to health checks from now on; calls are still answered."""
        self._shutting_down = True
        await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float | None) -> None:
        """NOT_SERVING, then let in-flight calls finish for `grace` seconds, then cancel them."""
        await self.mark_not_serving()
        if self._server is not None:
            await self._server.stop(grace)
            _log.info("gRPC external scaler stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
