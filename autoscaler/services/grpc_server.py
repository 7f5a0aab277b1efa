"""The gRPC server KEDA connects to: grpc.aio carrying the scaler, health checking and reflection.

Every resource a caller can make the daemon hold on this port has a bound, set in
`GrpcServerSettings` (docs/grpc.md lists them with their defaults and reasons):
message and metadata sizes, HTTP/2 streams per connection, connections (the two bound
the calls in flight), the time a request message may take, long-lived streams per
connection and in total, handshake, idle and age limits, and keepalive pings. Health
checking and reflection are grpcio's own servicers.

Shutdown order (the daemon calls `stop(grace)` on SIGTERM): health turns NOT_SERVING
first so probes and load balancers stop sending new work, then in-flight calls get
`grace` seconds to finish before the remaining ones are cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from autoscaler.engine.api import EngineView
from autoscaler.services.admission import NamespaceAdmission
from autoscaler.services.grpc_scaler import SERVICE_NAME, ExternalScalerService, ScalerServiceSettings
from autoscaler.services.grpcio_server import StreamLimitInterceptor, StreamSlots, grpcio_handlers
from autoscaler.services.rpc import RequestObserver
from autoscaler.services.tls import TlsSettings, server_credentials

_log = logging.getLogger(__name__)

HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(frozen=True, slots=True)
class GrpcServerSettings:
    host: str = "0.0.0.0"
    port: int = 9100
    """0 picks a free port; `GrpcServer.port` tells which."""
    tls: TlsSettings | None = None
    """None serves plaintext (KEDA's default, with no caCert/tlsClientCert set)."""
    max_receive_message_bytes: int = 64 * 1024
    """Largest request: a ScaledObjectRef's metadata is capped at 32 KiB by the spec parser."""
    max_send_message_bytes: int = 1024 * 1024
    """Largest response: the scaler's are tiny; reflection's file descriptors are the largest."""
    max_metadata_bytes: int = 16 * 1024
    """Largest HTTP/2 header list (gRPC metadata) of a call; larger ones are refused."""
    max_concurrent_streams: int = 256
    """HTTP/2 streams open at once per connection (nginx's default is 128). KEDA multiplexes
    every ScaledObject on one connection, but a poll is answered in about a millisecond, so
    few are open at once; a higher bound only lets one connection queue a larger burst
    ahead of everyone else's calls (grpc core sheds what queues too long with CANCELLED)."""
    max_connections: int = 128
    """TCP connections accepted at once; KEDA's operator and metrics server hold one or two
    each. With `max_concurrent_streams` it bounds the calls in flight (32,768; a call held
    open costs the server about 19 KiB). There is deliberately no cap on calls over all
    connections: a few connections could fill it and have everyone else's calls refused."""
    request_timeout_seconds: float = 10.0
    """A call's request message must arrive within this (KEDA's is a few hundred bytes
    sent at once); a call that announces one and never finishes it ends DEADLINE_EXCEEDED."""
    max_streams_per_connection: int = 192
    """Long-lived server streams (StreamIsActive, Health.Watch, reflection) per connection;
    below `max_concurrent_streams`, so a connection full of them still carries unary calls."""
    max_streams: int = 4096
    """Long-lived server streams over all connections."""
    handshake_timeout_seconds: float = 10.0
    """A connection must finish its TLS handshake and HTTP/2 preface within this, or it is closed."""
    max_connection_idle_seconds: float = 300.0
    """A connection without calls for this long gets GOAWAY; KEDA polls far more often."""
    max_connection_age_seconds: float = 1800.0
    """Every connection is asked to reconnect after this, so no peer holds one forever."""
    max_connection_age_grace_seconds: float = 60.0
    """Calls in flight at `max_connection_age` get this long before the connection closes."""
    min_ping_interval_seconds: float = 60.0
    """A client pinging more often than this (grpc-go's keepalive floor is 10 s) gets GOAWAY."""
    keepalive_seconds: float = 120.0
    """The server pings an idle-looking connection this often to find dead peers."""
    keepalive_timeout_seconds: float = 20.0
    """A ping unanswered for this long closes the connection."""


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def channel_options(settings: GrpcServerSettings) -> list[tuple[str, int]]:
    """grpc core's channel arguments for `settings`; names per grpc's grpc_types.h."""
    return [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.server_handshake_timeout_ms", _ms(settings.handshake_timeout_seconds)),
        ("grpc.max_connection_idle_ms", _ms(settings.max_connection_idle_seconds)),
        ("grpc.max_connection_age_ms", _ms(settings.max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", _ms(settings.max_connection_age_grace_seconds)),
        ("grpc.keepalive_time_ms", _ms(settings.keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", _ms(settings.keepalive_timeout_seconds)),
        # Pings without calls in flight are refused outright, and pings closer together
        # than the floor count as strikes; the second strike closes the connection.
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(settings.min_ping_interval_seconds)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 0),  # a second daemon on the same port must fail, not share it
    ]


class GrpcServer:
    """Owns one grpc.aio server; create and use it inside the daemon's event loop."""

    def __init__(
        self,
        engine: EngineView,
        settings: GrpcServerSettings | None = None,
        *,
        service_settings: ScalerServiceSettings | None = None,
        admission: NamespaceAdmission | None = None,
        observer: RequestObserver | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`clock` reads the engine's clock; see `ExternalScalerService`.

        `admission` decides which new targets may register; by default a fair share of
        the engine's default target cap per namespace (see `NamespaceAdmission`).
        """
        self._settings = settings or GrpcServerSettings()
        self._observer = observer
        self._service = ExternalScalerService(
            engine, settings=service_settings, admission=admission or NamespaceAdmission(engine), clock=clock
        )
        self._health = health_aio.HealthServicer()
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
        return self._port is not None and not self._shutting_down

    @property
    def address(self) -> str:
        return f"{self._settings.host}:{self.port}"

    async def start(self) -> int:
        """Bind, start serving and report SERVING; return the bound port."""
        if self._port is not None:
            raise RuntimeError("the gRPC server is already started")
        settings = self._settings
        bind = f"{settings.host}:{settings.port}"
        slots = StreamSlots(per_connection=settings.max_streams_per_connection, total=settings.max_streams)
        server = grpc.aio.server(
            options=channel_options(settings),
            handlers=grpcio_handlers(
                self._service.methods(), self._observer, request_timeout=settings.request_timeout_seconds
            ),
            interceptors=[StreamLimitInterceptor(slots)],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
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
        self._server, self._port = server, int(port)
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        mode = "plaintext" if settings.tls is None else ("mTLS" if settings.tls.mutual else "TLS")
        _log.info("gRPC external scaler listening on %s:%d (%s)", settings.host, port, mode)
        return self._port

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
        await self._service.close()
