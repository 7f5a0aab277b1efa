"""The README's first command, tried as a new user would: `autoscaler demo`.

It must start with no cluster and no Prometheus, and answer a KEDA-style
GetMetricSpec + GetMetrics (here through KEDA's own proto) within a minute.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from autoscaler.demo.catalog import DEMO_TARGETS
from tests.integration.keda_proto import KedaStubs, keda_stubs

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    log_path = tmp_path_factory.mktemp("demo") / "demo.log"
    log = log_path.open("w")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "autoscaler", "demo", "--http-port", "0", "--grpc-port", "0", "--speed", "120"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    addresses: dict[str, str] = {}
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if match := re.match(r"^(HTTP|gRPC)\s+(\S+)", line):
                addresses[match.group(1)] = match.group(2)
            if len(addresses) == 2:
                break
        assert len(addresses) == 2, "demo did not announce its addresses:\n" + "".join(lines) + log_path.read_text()
        addresses["started"] = str(started)
        yield addresses
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()
        log.close()
        assert process.returncode == 0, "demo did not shut down cleanly on SIGTERM"


@pytest.fixture(scope="module")
def keda(tmp_path_factory: pytest.TempPathFactory) -> KedaStubs:
    return keda_stubs(tmp_path_factory.mktemp("keda-proto"))


def wait_until_ready(demo: dict[str, str], name: str) -> None:
    """The demo's targets warm up by replaying their history: wait as KEDA's polling would."""
    while True:
        with urllib.request.urlopen(demo["HTTP"] + "api/v1/targets", timeout=10) as response:
            statuses = {entry["name"]: entry["status"] for entry in json.load(response)["targets"]}
        if statuses.get(name) == "ready":
            return
        assert time.monotonic() - float(demo["started"]) < 60, f"{name} not ready within a minute: {statuses}"
        time.sleep(0.5)


def test_demo_answers_keda_within_a_minute(demo: dict[str, str], keda: KedaStubs) -> None:
    target = DEMO_TARGETS[0]
    ref = keda.messages.ScaledObjectRef(name=target.name, namespace=target.namespace, scalerMetadata=target.metadata)
    with grpc.insecure_channel(demo["gRPC"]) as channel:
        stub = keda.services.ExternalScalerStub(channel)
        spec = stub.GetMetricSpec(ref, timeout=30)
        wait_until_ready(demo, target.name)
        request = keda.messages.GetMetricsRequest(scaledObjectRef=ref, metricName=spec.metricSpecs[0].metricName)
        answer = stub.GetMetrics(request, timeout=30)
    elapsed = time.monotonic() - float(demo["started"])
    assert elapsed < 60, f"first answer after {elapsed:.1f}s"
    value = answer.metricValues[0]
    assert value.metricValue >= 1 and value.metricValueFloat == float(value.metricValue)
    assert spec.metricSpecs[0].targetSize == 1 and spec.metricSpecs[0].targetSizeFloat == 1.0


def test_demo_serves_the_api_and_page(demo: dict[str, str]) -> None:
    with urllib.request.urlopen(demo["HTTP"] + "api/v1/targets", timeout=10) as response:
        listing = json.load(response)
    assert {entry["name"] for entry in listing["targets"]} == {target.name for target in DEMO_TARGETS}
    with urllib.request.urlopen(demo["HTTP"], timeout=10) as response:
        assert "<html" in response.read().decode().lower()


def test_keda_query_command_against_the_demo(demo: dict[str, str]) -> None:
    target = DEMO_TARGETS[1]
    wait_until_ready(demo, target.name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoscaler",
            "keda-query",
            "--address",
            demo["gRPC"],
            "--namespace",
            target.namespace,
            "--name",
            target.name,
            "--metadata",
            json.dumps(target.metadata),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["metricValue"] >= 1 and answer["metricValueFloat"] == float(answer["metricValue"])
