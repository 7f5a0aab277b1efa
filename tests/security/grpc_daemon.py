"""The daemon's gRPC side in its own process, for the hostile-peer tests to attack and measure.

    python -m tests.security.grpc_daemon --max-targets 10000

The real `Engine` (replaying one bundled trace per honest target, so their answers are
real plans) behind the real `GrpcServer` with its default settings, bound to loopback
port 0, logging in the text format to stderr. Once the honest targets are servable it
prints one JSON line: the port and the honest targets' GetMetrics requests (serialised,
hex). It stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler.adapters.clock import SystemClock
from autoscaler.adapters.replay import ReplaySource, ReplayTrace
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from autoscaler.engine.engine import Engine, EngineSettings
from autoscaler.logs import configure_logging
from autoscaler.services.admission import NamespaceAdmission
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.sim.trace import parse_trace
from tests.traces import trace_path

HONEST_NAMESPACE = "honest"
HONEST_TRACES = ("nasa_http_jul95", "nab_nyc_taxi")
STEP_SECONDS = 10.0


def honest_metadata(name: str) -> dict[str, str]:
    return {
        "query": f"replay:{name}",
        "capacityPerReplica": "10",
        "step": f"{STEP_SECONDS:g}s",
        "historyWindow": "2h",
        "leadTime": "20s",
        "model": "naive",
    }


def replay_source(start: float) -> ReplaySource:
    traces = []
    for name in HONEST_TRACES:
        with trace_path(name).open() as handle:
            values = parse_trace(handle, allow_negative=True).values
        traces.append(
            ReplayTrace(name=name, values=values, step_seconds=STEP_SECONDS, origin=start, offset_rows=len(values) // 2)
        )
    return ReplaySource(traces)


async def serve(max_targets: int) -> None:
    clock = SystemClock()
    engine = Engine(
        sources={"default": replay_source(clock.now())},
        clock=clock,
        fit_executor=None,
        settings=EngineSettings(max_targets=max_targets),
    )
    requests = []
    for name in HONEST_TRACES:
        metadata = honest_metadata(name)
        key, spec = target_key(HONEST_NAMESPACE, name, metadata), parse_spec(metadata)
        engine.ensure_target(key, spec)
        ref = pb2.ScaledObjectRef(name=name, namespace=HONEST_NAMESPACE, scalerMetadata=metadata)
        requests.append(pb2.GetMetricsRequest(scaledObjectRef=ref, metricName=metric_name_for(key, spec)))
    await engine.start()
    server = GrpcServer(
        engine,
        GrpcServerSettings(host="127.0.0.1", port=0),
        admission=NamespaceAdmission(engine, capacity=max_targets),
        clock=clock.now,
    )
    port = await server.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        targets = engine.snapshot().targets.values()
        if sum(target.status is TargetStatus.READY for target in targets) == len(HONEST_TRACES):
            break
        await asyncio.sleep(0.1)
    print(json.dumps({"port": port, "requests": [r.SerializeToString().hex() for r in requests]}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await server.stop(1.0)
    await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-targets", type=int, default=EngineSettings().max_targets)
    arguments = parser.parse_args()
    configure_logging("info", "text")
    asyncio.run(serve(arguments.max_targets))


if __name__ == "__main__":
    main()
