"""gRPC health checking (grpc.health.v1.Health) and reflection, as methods either server carries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from autoscaler.services.rpc import RpcError, RpcMethod, Writer

HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthState:
    """Each service's status; "" stands for the whole server. Watchers hear every change."""

    def __init__(self, services: Iterable[str]) -> None:
        self._status = dict.fromkeys(("", *services), NOT_SERVING)
        self._changed = asyncio.Event()

    def set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for service in self._status:
            self._status[service] = status
        self._changed.set()
        self._changed = asyncio.Event()

    def check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def watch(self, request: health_pb2.HealthCheckRequest, write: Writer) -> None:
        sent = None
        while True:
            changed = self._changed
            status = self._status.get(request.service, _SERVICE_UNKNOWN)
            if status != sent:
                await write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            await changed.wait()

    def methods(self) -> list[RpcMethod]:
        request = health_pb2.HealthCheckRequest
        return [
            RpcMethod(HEALTH_SERVICE, "Check", request, unary=self.check),
            RpcMethod(HEALTH_SERVICE, "Watch", request, server_stream=self.watch),
        ]


def reflection_method(services: Iterable[str]) -> RpcMethod:
    """grpc.reflection.v1alpha over `services` (grpcurl and grpc_cli use it to discover them)."""
    servicer = reflection.ReflectionServicer((*services, reflection.SERVICE_NAME))

    def answer(request: reflection_pb2.ServerReflectionRequest) -> Iterator[reflection_pb2.ServerReflectionResponse]:
        # grpcio's reference servicer answers each request on its own; no context is used.
        return iter(servicer.ServerReflectionInfo(iter((request,)), None))

    return RpcMethod(
        reflection.SERVICE_NAME, "ServerReflectionInfo", reflection_pb2.ServerReflectionRequest, per_message=answer
    )
