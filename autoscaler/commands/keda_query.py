"""`autoscaler keda-query`: call the scaler as KEDA does (GetMetricSpec, GetMetrics, IsActive).

For trying the daemon by hand and for smoke checks; KEDA itself is the real client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from autoscaler import protogen

protogen.ensure_generated()
from autoscaler._generated import externalscaler_pb2 as pb2  # noqa: E402
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc  # noqa: E402


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("keda-query", help="call a running scaler the way KEDA does")
    parser.add_argument("--address", default="127.0.0.1:9100", help="host:port of the gRPC server")
    parser.add_argument("--namespace", required=True, help="ScaledObject namespace")
    parser.add_argument("--name", required=True, help="ScaledObject name")
    parser.add_argument("--metadata", required=True, help="scalerMetadata as a JSON object")
    parser.add_argument("--ca-cert", help="CA certificate (PEM) to verify the server: enables TLS")
    parser.add_argument("--client-cert", help="client certificate (PEM) for mTLS")
    parser.add_argument("--client-key", help="client key (PEM) for mTLS")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    if not args.ca_cert:
        return grpc.aio.insecure_channel(args.address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(args.ca_cert).read_bytes(),
        private_key=Path(args.client_key).read_bytes() if args.client_key else None,
        certificate_chain=Path(args.client_cert).read_bytes() if args.client_cert else None,
    )
    return grpc.aio.secure_channel(args.address, credentials)


async def _query(args: argparse.Namespace, metadata: dict[str, str]) -> dict[str, Any]:
    ref = pb2.ScaledObjectRef(name=args.name, namespace=args.namespace, scalerMetadata=metadata)
    async with _channel(args) as channel:
        stub = pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        spec = await stub.GetMetricSpec(ref, timeout=args.timeout)
        metric = spec.metricSpecs[0]
        values = await stub.GetMetrics(
            pb2.GetMetricsRequest(scaledObjectRef=ref, metricName=metric.metricName), timeout=args.timeout
        )
        active = await stub.IsActive(ref, timeout=args.timeout)
    value = values.metricValues[0]
    return {
        "metricName": metric.metricName,
        "targetSize": metric.targetSize,
        "targetSizeFloat": metric.targetSizeFloat,
        "metricValue": value.metricValue,
        "metricValueFloat": value.metricValueFloat,
        "isActive": active.result,
    }


def run(args: argparse.Namespace) -> int:
    try:
        metadata = json.loads(args.metadata)
    except json.JSONDecodeError as error:
        print(f"keda-query: --metadata is not JSON: {error}", file=sys.stderr)
        return 2
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        print("keda-query: --metadata must be a JSON object of strings", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_query(args, metadata))
    except grpc.aio.AioRpcError as error:
        print(f"keda-query: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
