"""The gRPC server KEDA connects to: the scaler, health checking and reflection.

Two servers carry the same methods (autoscaler.services.rpc): the lean HTTP/2 server of
`autoscaler.services.http2` (the default: a fraction of grpc.aio's CPU per call) and
grpc.aio (`implementation="grpcio"`). docs/grpc.md compares them.

Shutdown order (the daemon calls `stop(grace)` on SIGTERM): health turns NOT_SERVING
first so probes and load balancers stop sending new work, then in-flight calls get
`grace` seconds to finish before the remaining ones are cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import grpc

from autoscaler.engine.api import EngineView
from autoscaler.services.grpc_scaler import SERVICE_NAME, ExternalScalerService, ScalerServiceSettings
from autoscaler.services.grpcio_server import grpcio_handlers
from autoscaler.services.health import HEALTH_SERVICE, NOT_SERVING, SERVING, HealthState, reflection_method
from autoscaler.services.http2.connection import ConnectionLimits
from autoscaler.services.http2.server import Http2GrpcServer
from autoscaler.services.rpc import RequestObserver, RpcMethod
from autoscaler.services.tls import TlsSettings, server_credentials, ssl_contexts

_log = logging.getLogger(__name__)

Implementation = Literal["builtin", "grpcio"]
IMPLEMENTATIONS: tuple[Implementation, ...] = ("builtin", "grpcio")


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
    implementation: Implementation = "builtin"
    """"builtin": the lean HTTP/2 server; "grpcio": grpc.aio."""


class GrpcServer:
    """Owns one gRPC server; create and use it inside the daemon's event loop."""

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
        self._observer = observer
        self._service = ExternalScalerService(engine, settings=service_settings, clock=clock)
        self._health = HealthState((SERVICE_NAME,))
        self._builtin: Http2GrpcServer | None = None
        self._grpcio: grpc.aio.Server | None = None
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
        return self._port is not None and not self._shutting_down

    @property
    def address(self) -> str:
        return f"{self._settings.host}:{self.port}"

    async def start(self) -> int:
        """Bind, start serving and report SERVING; return the bound port."""
        if self._port is not None:
            raise RuntimeError("the gRPC server is already started")
        settings = self._settings
        methods = [
            *self._service.methods(),
            *self._health.methods(),
            reflection_method((SERVICE_NAME, HEALTH_SERVICE)),
        ]
        bind = f"{settings.host}:{settings.port}"
        if settings.implementation == "builtin":
            limits = ConnectionLimits(
                max_message_bytes=settings.max_message_bytes, max_concurrent_streams=settings.max_concurrent_streams
            )
            tls = None if settings.tls is None else ssl_contexts(settings.tls)
            server = Http2GrpcServer(methods, limits=limits, observer=self._observer, tls=tls)
            try:
                port = await server.start(settings.host, settings.port)
            except OSError as error:
                raise OSError(f"gRPC server cannot listen on {bind}: {error.strerror or error}") from error
            self._builtin = server
        else:
            port = await self._start_grpcio(methods, bind)
        self._port = port
        self._health.set_all(SERVING)
        mode = "plaintext" if settings.tls is None else ("mTLS" if settings.tls.mutual else "TLS")
        _log.info(
            "gRPC external scaler listening on %s:%d (%s, %s server)",
            settings.host,
            port,
            mode,
            settings.implementation,
        )
        return port

    async def _start_grpcio(self, methods: list[RpcMethod], bind: str) -> int:
        settings = self._settings
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
            ("grpc.so_reuseport", 0),  # a second daemon on the same port must fail, not share it
        ]
        server = grpc.aio.server(options=options, handlers=grpcio_handlers(methods, self._observer))
        try:
            if settings.tls is None:
                port = server.add_insecure_port(bind)
            else:
                port = server.add_secure_port(bind, server_credentials(settings.tls))
        except RuntimeError as error:
            raise OSError(f"gRPC server cannot listen on {bind}: {error}") from error
        if port == 0:
            raise OSError(f"gRPC server cannot listen on {bind}")
        await server.start()
        self._grpcio = server
        return int(port)

    async def mark_not_serving(self) -> None:
        """Report NOT_SERVING to health checks from now on; calls are still answered."""
        self._shutting_down = True
        self._health.set_all(NOT_SERVING)

    async def stop(self, grace: float | None) -> None:
        """NOT_SERVING, then let in-flight calls finish for `grace` seconds, then cancel them."""
        await self.mark_not_serving()
        if self._builtin is not None:
            await self._builtin.stop(grace)
        if self._grpcio is not None:
            await self._grpcio.stop(grace)
        if self._port is not None:
            _log.info("gRPC external scaler stopped")
