"""`autoscaler demo`: the daemon on bundled real traces, no cluster and no Prometheus needed.

The traces replay as live metrics on a virtual clock running `--speed` times faster
than the wall, so a day of traffic passes in minutes. Both servers listen on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import time
from typing import Any

from autoscaler.adapters.clock import ScaledClock
from autoscaler.commands.serve import add_common_server_flags, overrides_from
from autoscaler.daemon import Listening, run_daemon
from autoscaler.demo.catalog import DEMO_ENDPOINT, DEMO_TARGETS, load_demo_source
from autoscaler.logs import configure_logging
from autoscaler.settings import load_settings


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the daemon on a bundled real trace (no cluster needed)")
    parser.add_argument("--speed", type=float, default=60.0, help="virtual seconds per wall second (default 60)")
    add_common_server_flags(parser)
    parser.set_defaults(grpc_port=9100, http_port=8080, host="127.0.0.1", log_format="text", log_level="warning")


def _instructions(listening: Listening, speed: float) -> str:
    first = DEMO_TARGETS[0]
    metadata = json.dumps(first.metadata, separators=(",", ":"))
    lines = [
        f"HTTP  {listening.http_url}",
        f"gRPC  {listening.grpc_address}",
        "",
        f"Predictive autoscaler demo: replaying {len(DEMO_TARGETS)} real traces at {speed:g}x.",
        *(f"  target {t.namespace}/{t.name}: {t.trace_file}" for t in DEMO_TARGETS),
        "  Each target answers once its history is replayed (a few seconds; UNAVAILABLE until then).",
        "",
        f"  page:       {listening.http_url}",
        f"  JSON API:   {listening.http_url}api/v1/targets",
        f"  terminal:   autoscaler inspect --url {listening.http_url}",
        f"  KEDA call:  autoscaler keda-query --address {listening.grpc_address}"
        f" --namespace {first.namespace} --name {first.name} --metadata {shlex.quote(metadata)}",
        "",
        "Ctrl-C stops it.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.speed <= 0 or args.speed > 100_000:
        print("autoscaler demo: --speed must be in (0, 100000]")
        return 2
    settings = load_settings(None, environ={}, overrides=overrides_from(args))
    configure_logging(settings.log_level, settings.log_format)
    origin = time.time()
    clock = ScaledClock(start=origin, speed=args.speed)
    source = load_demo_source(origin=origin)

    def announce(listening: Listening) -> None:
        print(_instructions(listening, args.speed), flush=True)

    asyncio.run(
        run_daemon(
            settings,
            sources={DEMO_ENDPOINT: source},
            clock=clock,
            preregistered={(t.namespace, t.name): t.metadata for t in DEMO_TARGETS},
            on_listening=announce,
        )
    )
    return 0
