"""`python -m autoscaler serve` as a subprocess, and a KEDA-style client of it.

Shared by the tests that kill the daemon or run several: start one (its JSON log in a
file, ports announced by its "listening" line), kill it with SIGKILL, find the
processes it left behind (its fit workers inherit a marker variable), and build the
requests KEDA sends for a target.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler.domain.spec import metric_name_for, parse_spec, target_key

REPO = Path(__file__).resolve().parents[2]
# Marks a daemon's processes (fit workers inherit it), so leftovers can be found.
MARK_VARIABLE = "AUTOSCALER_TEST_DAEMON_RUN"
LISTENING_TIMEOUT_SECONDS = 60.0


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    grpc_address: str
    http_url: str
    log: Path


def start_daemon(prometheus_url: str, log: Path, mark: str, *, config: Path | None = None) -> Daemon:
    """Start the daemon with its log in `log`; return once its JSON "listening" line is there."""
    command = [
        sys.executable, "-m", "autoscaler", "serve", "--prometheus-url", prometheus_url,
        "--grpc-port", "0", "--http-port", "0", "--host", "127.0.0.1", "--log-format", "json",
        *(["--config", str(config)] if config else []),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=sink, env={**os.environ, MARK_VARIABLE: mark})
    deadline = time.monotonic() + LISTENING_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") == "listening":
                return Daemon(process, record["grpc"], record["http"], log)
        assert process.poll() is None, f"daemon exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"no listening line within {LISTENING_TIMEOUT_SECONDS:.0f} s:\n{log.read_text()[-3000:]}")


def kill_hard(daemon: Daemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(timeout=10)


def processes_marked(mark: str) -> list[int]:
    marked = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARK_VARIABLE}={mark}".encode() in environment.split(b"\0"):
            marked.append(int(entry.name))
    return marked


def leftovers_after_exit(mark: str) -> list[int]:
    """Processes of a dead daemon still alive after a grace period; they are killed here."""
    deadline = time.monotonic() + 5
    while (marked := processes_marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in marked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return marked


def scaled_object_ref(namespace: str, name: str, metadata: Mapping[str, str]) -> pb2.ScaledObjectRef:
    return pb2.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=dict(metadata))


def metrics_request(namespace: str, name: str, metadata: Mapping[str, str]) -> pb2.GetMetricsRequest:
    """The GetMetrics request KEDA sends for this ScaledObject trigger."""
    key = target_key(namespace, name, metadata)
    return pb2.GetMetricsRequest(
        scaledObjectRef=scaled_object_ref(namespace, name, metadata),
        metricName=metric_name_for(key, parse_spec(metadata)),
    )


def target_detail(daemon: Daemon, namespace: str, name: str, metadata: Mapping[str, str], *, points: int) -> Any:
    """The inspection API's view of one target (`/api/v1/targets/...`), its newest `points` of history."""
    digest = target_key(namespace, name, metadata).metadata_digest
    url = f"{daemon.http_url.rstrip('/')}/api/v1/targets/{namespace}/{name}/{digest}?points={points}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)
