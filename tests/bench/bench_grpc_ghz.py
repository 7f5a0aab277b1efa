"""GetMetrics under load from ghz, a Go gRPC load generator (a cheap client).

    .venv/bin/python -m tests.bench.bench_grpc_ghz [--targets 1000] [--rates 2000 3000] [--seconds 15]

`bench_grpc` drives the server with a Python grpc.aio client, which on 2 cores spends
almost as much CPU per call as the server and so caps the rate it can offer. Here ghz
(`go install github.com/bojand/ghz/cmd/ghz@v0.120.0`, cached beside the harness
binaries) sends the calls: 64 concurrent callers on one HTTP/2 connection, as KEDA's
operator does, round-robin over every target's GetMetricsRequest, at a fixed rate.
The server is the same as in `bench_grpc`: the real GrpcServer over a fake engine
holding READY snapshots. Latencies are ghz's, measured at the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from autoscaler.services.grpc_scaler import ScalerServiceSettings
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from tests.unit.services.fake_engine import FakeEngine, ready_targets

REPO = Path(__file__).parents[2]
GHZ_VERSION = "v0.120.0"
NAMESPACE = "bench"


def ghz_binary() -> str:
    cache = Path(os.environ.get("PA_CACHE_DIR", Path.home() / ".cache" / "predictive-autoscaler"))
    candidate = cache / "bin" / f"ghz-{GHZ_VERSION}" / "ghz"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ghz")
    if found is None:
        raise SystemExit(
            f"ghz not found; build it: GOBIN={candidate.parent} go install github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"
        )
    return found


def requests_file(refs: Sequence[tuple[str, dict[str, str]]], directory: Path) -> Path:
    requests = []
    for name, raw in refs:
        metric = metric_name_for(target_key(NAMESPACE, name, raw), parse_spec(raw))
        ref = {"name": name, "namespace": NAMESPACE, "scalerMetadata": raw}
        requests.append({"scaledObjectRef": ref, "metricName": metric})
    path = directory / "requests.json"
    path.write_text(json.dumps(requests))
    return path


async def run_ghz(port: int, data: Path, rate: int, seconds: float, callers: int) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        ghz_binary(), "--insecure", "--proto", str(REPO / "protos" / "externalscaler.proto"),
        "--call", "externalscaler.ExternalScaler.GetMetrics", "--data-file", str(data),
        "--concurrency", str(callers), "--connections", "1", "--rps", str(rate),
        "--duration", f"{seconds}s", "--format", "json", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"ghz failed: {stderr.decode()[-2000:]}")
    report = json.loads(stdout)
    latencies = {entry["percentage"]: entry["latency"] / 1e6 for entry in report["latencyDistribution"]}
    errors = sum(count for code, count in report.get("statusCodeDistribution", {}).items() if code != "OK")
    return {"rps": report["rps"], "p50": latencies[50], "p99": latencies[99], "errors": float(errors)}


async def main_async(args: argparse.Namespace) -> None:
    engine = FakeEngine()
    refs = ready_targets(engine, args.targets, namespace=NAMESPACE)
    server = GrpcServer(
        engine,
        GrpcServerSettings(host="127.0.0.1", port=0),
        service_settings=ScalerServiceSettings(spec_cache_size=max(4096, 2 * args.targets)),
    )
    port = await server.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as directory:
            data = requests_file(refs, Path(directory))
            await run_ghz(port, data, 500, 3, args.callers)  # warm-up: caches and connection
            for rate in args.rates:
                result = await run_ghz(port, data, rate, args.seconds, args.callers)
                rows.append((rate, result))
    finally:
        await server.stop(None)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"GetMetrics, {args.targets} targets, {args.callers} callers on one connection, ghz {GHZ_VERSION}, {loop}")
    print(f"{'offered/s':>10} {'achieved/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for rate, result in rows:
        print(f"{rate:>10} {result['rps']:>11.0f} {result['p50']:>8.2f} {result['p99']:>8.2f} {result['errors']:>7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--rates", type=int, nargs="*", default=[1000, 2000, 3000])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop  # noqa: PLC0415  (optional: only for this comparison, not a dependency)

        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
