"""`autoscaler serve`: run the daemon against the configured Prometheus endpoints."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from autoscaler.daemon import run_daemon
from autoscaler.logs import configure_logging
from autoscaler.settings import ConfigError, load_settings


def add_common_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grpc-port", type=int, help="gRPC listen port (0 picks a free one)")
    parser.add_argument("--http-port", type=int, help="HTTP listen port for the API, page and /metrics")
    parser.add_argument("--host", help="listen address for both servers")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["json", "text"])


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "grpc_port": args.grpc_port,
        "http_port": args.http_port,
        "grpc_host": args.host,
        "http_host": args.host,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the KEDA external scaler daemon")
    parser.add_argument("--config", help="YAML configuration file (see docs/configuration.md)")
    parser.add_argument("--prometheus-url", help="URL of the 'default' Prometheus endpoint")
    add_common_server_flags(parser)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, overrides={**overrides_from(args), "prometheus_url": args.prometheus_url})
    except ConfigError as error:
        print(f"autoscaler serve: configuration error: {error}", file=sys.stderr)
        return 2
    if not settings.prometheus:
        print(
            "autoscaler serve: no Prometheus endpoint configured; pass --prometheus-url, set PA_PROMETHEUS_URL "
            "or list prometheus.endpoints in --config (or try `autoscaler demo`)",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_daemon(settings))
    return 0
