"""Composition root: wires settings, sources, engine, servers and the actuator; owns shutdown.

Shutdown order (SIGTERM or SIGINT): health turns NOT_SERVING so KEDA and the kubelet
stop sending, the gRPC server drains with a grace period, the HTTP server stops, the
actuator releases its Lease, the engine cancels its tasks and closes its clients, and
the fit workers exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from autoscaler.adapters import kube_config
from autoscaler.adapters.clock import Clock, ReplayClock, SystemClock
from autoscaler.adapters.kube_auth import KubeReviewer
from autoscaler.adapters.prometheus import PrometheusClient
from autoscaler.adapters.replicas import KubeReplicaReader
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.engine import fit_pool
from autoscaler.engine.actuation import start_actuation
from autoscaler.engine.engine import Engine, EngineHooks, EngineSettings
from autoscaler.engine.sources import MetricSource
from autoscaler.gc_pacing import PacedCollector
from autoscaler.services import telemetry
from autoscaler.services.admission import NamespaceAdmission
from autoscaler.services.authn import Authenticator
from autoscaler.services.grpc_scaler import ScalerServiceSettings
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.services.http_api import ResponseLimits, create_http_app
from autoscaler.services.http_server import BoundedHttpServer, HttpServerLimits
from autoscaler.services.tls import TlsSettings
from autoscaler.settings import ClockSettings, GrpcSettings, Settings

log = logging.getLogger("autoscaler.daemon")

SHUTDOWN_GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Listening:
    grpc_address: str
    http_url: str


def _fit_executor(settings: Settings) -> Executor | None:
    if not settings.engine.fit_in_process:
        return None  # the event loop's default thread pool
    # Called on the event-loop thread, which also submits every fit: see fit_pool.
    return fit_pool.FitPool(max_workers=settings.engine.fit_workers)


def settings_clock(settings: ClockSettings) -> Clock:
    """The system clock, or the replay timeline when `clock.source: replay` asks for it by name."""
    replay = settings.replay
    # The settings refuse source replay without start and wallOrigin; the checks narrow the types.
    if settings.source == "replay" and replay.start is not None and replay.wall_origin is not None:
        log.warning(
            "replay clock: planning on virtual time, not the wall clock",
            extra={"start": replay.start, "speed": replay.speed, "wall_origin": replay.wall_origin},
        )
        return ReplayClock(start=replay.start, speed=replay.speed, wall_origin=replay.wall_origin)
    return SystemClock()


def _hooks() -> EngineHooks:
    return EngineHooks(
        on_fit=telemetry.observe_fit,
        on_update=telemetry.observe_update,
        on_source_error=telemetry.count_prometheus_error,
    )


async def run_daemon(
    settings: Settings,
    *,
    sources: Mapping[str, MetricSource] | None = None,
    clock: Clock | None = None,
    preregistered: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
    on_listening: Callable[[Listening], Awaitable[None] | None] | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop_event`), then shut down in order."""
    clock = clock or settings_clock(settings.clock)
    if sources is None:
        sources = {endpoint.name: PrometheusClient(endpoint) for endpoint in settings.prometheus}
    executor = _fit_executor(settings)
    # Read-only use here: the scale targets' replicas (replicaSource kubernetes).
    kube_client = await asyncio.to_thread(kube_config.configured_api_client, settings.actuator.kubeconfig)
    engine = Engine(
        sources=sources,
        replicas=None if kube_client is None else KubeReplicaReader(kube_client),
        clock=clock,
        fit_executor=executor,
        settings=EngineSettings(
            tick_seconds=settings.engine.tick_seconds,
            max_targets=settings.engine.max_targets,
            concurrent_fits=settings.engine.fit_workers + 1,
        ),
        hooks=_hooks(),
    )
    for (namespace, name), metadata in (preregistered or {}).items():
        engine.ensure_target(target_key(namespace, name, metadata), parse_spec(metadata))
    await engine.start()

    telemetry.install_collector(engine)
    grpc_server = GrpcServer(
        engine,
        _grpc_server_settings(settings.grpc),
        service_settings=ScalerServiceSettings(
            warming_wait_seconds=settings.grpc.warming_wait_seconds,
            limits=settings.limits.operator_limits(placeholders_written=settings.actuator.mode != "off"),
        ),
        admission=NamespaceAdmission(engine, capacity=settings.engine.max_targets),
        observer=lambda method, code, seconds: telemetry.observe_grpc(method, code.name, seconds),
        clock=clock.now,
    )
    grpc_port = await grpc_server.start()

    # TokenReview + SubjectAccessReview when the HTTP port is reachable beyond loopback.
    auth_client = (
        await asyncio.to_thread(kube_config.api_client, settings.actuator.kubeconfig)
        if settings.http.authenticated
        else None
    )
    authenticator = None if auth_client is None else Authenticator(KubeReviewer(auth_client))
    http_limits = settings.http.limits
    http_app = create_http_app(
        engine,
        ready=lambda: engine.ready and grpc_server.serving,
        authenticator=authenticator,
        limits=ResponseLimits(
            max_streaming_responses=http_limits.max_streaming_responses,
            write_timeout_seconds=http_limits.write_timeout_seconds,
        ),
    )
    http_server = BoundedHttpServer(
        http_app,
        host=settings.http.host,
        port=settings.http.port,
        limits=HttpServerLimits(
            max_connections=http_limits.max_connections, idle_timeout_seconds=http_limits.idle_timeout_seconds
        ),
    )
    http_port = await http_server.start()

    actuation_client = None
    actuation = None
    if settings.actuator.mode != "off":
        actuation_client = await asyncio.to_thread(kube_config.api_client, settings.actuator.kubeconfig)
        actuation = await start_actuation(
            settings,
            engine,
            api_client=actuation_client,
            on_result=lambda _key, result, _error: telemetry.count_actuation(result),
        )
    collector = None
    if settings.engine.full_collection_seconds:
        collector = PacedCollector(settings.engine.full_collection_seconds)
        collector.start()  # last, so all the daemon set up is frozen out of collections

    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    host = "127.0.0.1" if settings.http.host in {"0.0.0.0", "::"} else settings.http.host
    listening = Listening(grpc_address=f"{host}:{grpc_port}", http_url=f"http://{host}:{http_port}/")
    log.info("listening", extra={"grpc": listening.grpc_address, "http": listening.http_url})
    if on_listening is not None:
        result = on_listening(listening)
        if result is not None:
            await result
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await grpc_server.stop(SHUTDOWN_GRACE_SECONDS)
        await http_server.stop()
        if auth_client is not None:
            close_client: Callable[[], None] = auth_client.close  # the client is untyped
            close_client()
        if actuation is not None:
            await actuation.stop()
        if actuation_client is not None:
            kube_config.close_api_client(actuation_client)
        await engine.stop()
        if kube_client is not None:
            kube_config.close_api_client(kube_client)
        if collector is not None:
            await collector.stop()
        telemetry.uninstall_collector()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")


def _grpc_server_settings(grpc: GrpcSettings) -> GrpcServerSettings:
    tls = None
    if grpc.tls_cert_file and grpc.tls_key_file:
        client_ca = Path(grpc.client_ca_file) if grpc.client_ca_file else None
        tls = TlsSettings(Path(grpc.tls_cert_file), Path(grpc.tls_key_file), client_ca)
    return GrpcServerSettings(host=grpc.host, port=grpc.port, tls=tls)
