"""A real Prometheus (Debian's /usr/bin/prometheus) on loopback, and what it scrapes.

- `MetricsExporter`: our /metrics endpoint (text format 0.0.4) on 127.0.0.1:<free port>,
  served from a thread so it outlives any one test's event loop. Tests set gauges and
  linear counters.
- `trace_points`, `write_openmetrics`, `create_blocks`: turn a real trace (the shared trace
  directory, else the demo's bundled ones) into TSDB blocks with
  `promtool tsdb create-blocks-from openmetrics`, written into the data directory before
  Prometheus starts, so range queries return real history.
- `PrometheusServer`: generated config (1 s scrapes of one exporter), temp data dir,
  optional TLS via --web.config.file; start waits for /-/ready; stop is a clean SIGTERM;
  restart reuses the port and the data dir.
- `make_tls_files`: a throwaway CA and a server certificate for 127.0.0.1.
- `BearerTokenProxy`: a loopback aiohttp proxy in front of Prometheus that checks and
  records the Authorization header, since Prometheus itself cannot check bearer tokens.

Backfill before the first start, with points older than anything to be scraped: the
head then starts after the newest block, and blocks never overlap it. Blocks may overlap
each other (two backfills of one range): 2.42 loads them with a warning and merges them at
query time, without the --storage.tsdb.allow-overlapping-blocks flag of older releases.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import json
import math
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web
from cryptography.x509.oid import ExtendedKeyUsageOID

from autoscaler.adapters.prometheus import PrometheusClient, Sample
from tests.integration.grpc_fixtures import issue_authority, issue_leaf
from tests.loopback_http import serve_on_loopback
from tests.traces import trace_path

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
PROMTOOL_BINARY = Path("/usr/bin/promtool")
# The labels Prometheus attaches to everything scraped from the exporter; backfilled
# series carry the same ones, so history and live samples form one series.
EXPORTER_LABELS: Mapping[str, str] = {"job": "exporter", "instance": "exporter"}
SCRAPE_INTERVAL_SECONDS = 1

Labels = Mapping[str, str]
Point = tuple[float, float]


class PrometheusHarnessError(RuntimeError):
    """The real Prometheus could not be provided; the message says what to install or read."""


def require_binaries() -> None:
    """Fail (never skip): these tests exist to run against the real server."""
    missing = [str(path) for path in (PROMETHEUS_BINARY, PROMTOOL_BINARY) if not os.access(path, os.X_OK)]
    if missing:
        raise PrometheusHarnessError(
            f"{', '.join(missing)} not found: the integration tests need Debian's Prometheus "
            "(apt-get install -y prometheus)"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ---- exporter -------------------------------------------------------------------------


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    pairs = (f'{name}="{_escape_label_value(value)}"' for name, value in sorted(labels.items()))
    return "{" + ",".join(pairs) + "}"


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass(frozen=True)
class _Counter:
    rate_per_second: float
    origin: float

    def value_at(self, timestamp: float) -> float:
        return self.rate_per_second * (timestamp - self.origin)


class MetricsExporter:
    """Serves /metrics from a thread; values are set by the test.

    Counters grow linearly, `rate * (t - origin)`, with the origin a day before the
    exporter was made, so a backfilled stretch of the same counter (`counter_history`)
    joins the live one without a reset and `rate()` returns exactly the rate.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], _Counter]] = {}
        self._origin = time.time() - 86400.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    @property
    def address(self) -> str:
        if self._server is None:
            raise PrometheusHarnessError("exporter is not started")
        return f"127.0.0.1:{self._server.server_address[1]}"

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        with self._lock:
            self._gauges.setdefault(name, {})[_key(labels)] = float(value)

    def set_counter_rate(self, name: str, rate_per_second: float, labels: Labels | None = None) -> None:
        with self._lock:
            self._counters.setdefault(name, {})[_key(labels)] = _Counter(rate_per_second, self._origin)

    def remove(self, name: str, labels: Labels | None = None) -> None:
        """Stop exposing one series (Prometheus then marks it stale)."""
        with self._lock:
            self._gauges.get(name, {}).pop(_key(labels), None)
            self._counters.get(name, {}).pop(_key(labels), None)

    def counter_history(self, *, start: float, end: float, step_seconds: float) -> list[BackfillSeries]:
        """Every counter's values on the grid [start, end], for backfilling."""
        grid = _grid(start, end, step_seconds)
        with self._lock:
            counters = [
                (name, dict(key), counter) for name, series in self._counters.items() for key, counter in series.items()
            ]
        return [
            BackfillSeries(name, {**EXPORTER_LABELS, **labels}, [(t, counter.value_at(t)) for t in grid])
            for name, labels, counter in counters
        ]

    def render(self) -> str:
        now = time.time()
        lines: list[str] = []
        with self._lock:
            for name, gauges in sorted(self._gauges.items()):
                lines.append(f"# TYPE {name} gauge")
                lines += [f"{name}{_format_labels(dict(key))} {_format_value(v)}" for key, v in gauges.items()]
            for name, counters in sorted(self._counters.items()):
                lines.append(f"# TYPE {name} counter")
                lines += [
                    f"{name}{_format_labels(dict(key))} {_format_value(c.value_at(now))}" for key, c in counters.items()
                ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Scrapes every second would flood the test output."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-exporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> MetricsExporter:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _key(labels: Labels | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((labels or {}).items()))


def _grid(start: float, end: float, step_seconds: float) -> list[float]:
    count = math.floor((end - start) / step_seconds + 1e-9) + 1
    return [start + index * step_seconds for index in range(count)]


# ---- backfill -------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillSeries:
    """One series to write into TSDB blocks: (timestamp seconds, value) points, oldest first."""

    metric: str
    labels: Labels
    points: Sequence[Point]


def trace_points(
    trace: str,
    *,
    end: float,
    step_seconds: float,
    count: int,
    scale: float = 1.0,
) -> list[Point]:
    """The last `count` values of a shared trace, re-timed onto a grid ending at `end`.

    The trace keeps its shape; its clock is replaced (`step_seconds` apart, the newest
    point at `end`) and its values multiplied by `scale`.
    """
    try:
        path = trace_path(trace)
    except FileNotFoundError as error:
        raise PrometheusHarnessError(str(error)) from error
    with path.open(newline="") as handle:
        values = [float(row["value"]) for row in csv.DictReader(handle)]
    if len(values) < count:
        raise PrometheusHarnessError(f"trace {trace} has {len(values)} points, {count} asked")
    tail = values[-count:]
    first = end - (count - 1) * step_seconds
    return [(first + index * step_seconds, value * scale) for index, value in enumerate(tail)]


def write_openmetrics(path: Path, series: Iterable[BackfillSeries]) -> None:
    """OpenMetrics text that promtool accepts: one family per metric name, then # EOF.

    Every family is written as a gauge: TSDB blocks keep no type, and a counter family
    would force the `_total` naming rules of OpenMetrics onto our metric names.
    """
    families: dict[str, list[BackfillSeries]] = {}
    for item in series:
        families.setdefault(item.metric, []).append(item)
    with path.open("w") as handle:
        for metric, members in families.items():
            handle.write(f"# TYPE {metric} gauge\n")
            for member in members:
                labels = _format_labels(member.labels)
                for timestamp, value in member.points:
                    handle.write(f"{metric}{labels} {_format_value(value)} {timestamp:.3f}\n")
        handle.write("# EOF\n")


def create_blocks(openmetrics_file: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [str(PROMTOOL_BINARY), "tsdb", "create-blocks-from", "openmetrics", "--quiet"]
    result = subprocess.run(
        [*command, str(openmetrics_file), str(data_dir)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise PrometheusHarnessError(
            f"promtool backfill of {openmetrics_file} failed ({result.returncode}): {result.stderr[-2000:]}"
        )


# ---- TLS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path) -> TLSFiles:
    """A test CA and, signed by it, a server certificate for 127.0.0.1 and localhost valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca = issue_authority(directory, "ca", now)
    server = issue_leaf(
        directory,
        "server",
        ca,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        not_before=now - datetime.timedelta(minutes=5),
        not_after=now + datetime.timedelta(days=1),
    )
    return TLSFiles(ca.issued.cert_file, server.cert_file, server.key_file)


# ---- server ---------------------------------------------------------------------------


@dataclass
class PrometheusServer:
    """One Prometheus process on 127.0.0.1, its config and data under `workdir`.

    The port is chosen on the first start and kept, so clients built before a restart
    still reach it. `backfill` only works while the server is stopped.
    """

    workdir: Path
    scrape_target: str | None = None
    tls: TLSFiles | None = None
    retention: str = "30d"
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def backfill(self, series: Sequence[BackfillSeries]) -> None:
        if self.running:
            raise PrometheusHarnessError("backfill needs the server stopped: blocks must not overlap the head")
        self.workdir.mkdir(parents=True, exist_ok=True)
        openmetrics = self.workdir / f"backfill-{time.time_ns()}.om"
        write_openmetrics(openmetrics, series)
        create_blocks(openmetrics, self.data_dir)

    def start(self, *, timeout: float = 30.0) -> None:
        require_binaries()
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port()
        command = [
            str(PROMETHEUS_BINARY),
            f"--config.file={self._write_config()}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
        ]
        if self.tls is not None:
            command.append(f"--web.config.file={self._write_web_config(self.tls)}")
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready(timeout)
        if self.scrape_target is not None:
            self._wait_for_first_scrape(timeout)

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM and wait, so the WAL is flushed for a restart; SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise PrometheusHarnessError(f"prometheus ignored SIGTERM for {timeout}s; killed") from None

    def restart(self, *, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout=timeout)

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _write_config(self) -> Path:
        scrape_configs = []
        if self.scrape_target is not None:
            scrape_configs.append(
                {
                    "job_name": EXPORTER_LABELS["job"],
                    "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                    "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
                    "static_configs": [
                        {"targets": [self.scrape_target], "labels": {"instance": EXPORTER_LABELS["instance"]}}
                    ],
                }
            )
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s", "evaluation_interval": "15s"},
            "scrape_configs": scrape_configs,
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _write_web_config(self, tls: TLSFiles) -> Path:
        config = {"tls_server_config": {"cert_file": str(tls.server_cert), "key_file": str(tls.server_key)}}
        path = self.workdir / "web.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.tls.ca_cert)) if self.tls else None

    def _wait_for_first_scrape(self, timeout: float) -> None:
        """Tests start from a known state: the exporter's series are in the head."""
        query = urllib.parse.urlencode({"query": f'up{{job="{EXPORTER_LABELS["job"]}"}} == 1'})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/query?{query}", timeout=2, context=self._ssl_context()
            ) as response:
                if json.load(response)["data"]["result"]:
                    return
            time.sleep(0.1)
        raise PrometheusHarnessError(f"no scrape of {self.scrape_target} within {timeout}s:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> None:
        context = self._ssl_context()
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                self._process = None
                raise PrometheusHarnessError(f"prometheus exited ({code}) before ready:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last_problem = str(error)
            time.sleep(0.05)
        self.stop()
        raise PrometheusHarnessError(f"prometheus not ready after {timeout}s ({last_problem}):\n{self.log_tail()}")


# ---- bearer-token proxy ---------------------------------------------------------------


class BearerTokenProxy:
    """Forwards /api/v1/* to Prometheus when `Authorization: Bearer <expected>` is sent.

    Any other header gets a plain-text 401. `seen` records every Authorization header received, so a
    test can check what the client sent. Runs on the test's own event loop.
    """

    def __init__(self, upstream: str, expected_token: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.expected_token = expected_token
        self.seen: list[str | None] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> None:
        self._runner, self.url = await serve_on_loopback(self._forward)
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        self.seen.append(header)
        if header != f"Bearer {self.expected_token}":
            # Plain text, as auth proxies answer: the client must cope with non-JSON 4xx.
            return web.Response(text="Unauthorized", status=401)
        assert self._session is not None
        async with self._session.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            data=await request.read(),
            headers={"Content-Type": request.headers.get("Content-Type", "application/x-www-form-urlencoded")},
        ) as upstream:
            body = await upstream.read()
            return web.Response(body=body, status=upstream.status, content_type="application/json")


# ---- what the shared server carries ---------------------------------------------------

HISTORY_METRIC = "demo_requests_waiting"
HISTORY_TRACE = "azure_llm2023_conv_rate"  # bundled with the demo, so CI has it too
HISTORY_STEP_SECONDS = 60.0  # the trace's 10 s bins re-timed: an hour becomes ~6 h
HISTORY_POINTS = 300  # five hours: enough for a >3 h range at 1 s that needs two requests
COUNTER_HISTORY_SECONDS = 600  # covers any preset rate window (120 s) with 1 s samples
PRESET_SELECTOR = 'model_name="m1"'


@dataclass(frozen=True)
class ExporterSeries:
    metric: str
    labels: Labels
    value: float  # a gauge's value, or a counter's rate per second
    counter: bool = False


def _m1(pod: str) -> dict[str, str]:
    return {"model_name": "m1", "pod": pod}


_OTHER_MODEL = {"model_name": "m2", "pod": "z"}

# Two pods of model m1 and a decoy pod of m2 that PRESET_SELECTOR must exclude.
PRESET_SERIES: tuple[ExporterSeries, ...] = (
    ExporterSeries("vllm:num_requests_waiting", _m1("a"), 3),
    ExporterSeries("vllm:num_requests_waiting", _m1("b"), 4),
    ExporterSeries("vllm:num_requests_waiting", _OTHER_MODEL, 100),
    ExporterSeries("vllm:num_requests_running", _m1("a"), 5),
    ExporterSeries("vllm:num_requests_running", _m1("b"), 6),
    ExporterSeries("vllm:num_requests_running", _OTHER_MODEL, 100),
    ExporterSeries("vllm:request_success_total", _m1("a"), 2, counter=True),
    ExporterSeries("vllm:request_success_total", _m1("b"), 3, counter=True),
    ExporterSeries("vllm:request_success_total", _OTHER_MODEL, 50, counter=True),
    ExporterSeries("vllm:prompt_tokens_total", _m1("a"), 100, counter=True),
    ExporterSeries("vllm:prompt_tokens_total", _OTHER_MODEL, 1000, counter=True),
    ExporterSeries("vllm:generation_tokens_total", _m1("a"), 50, counter=True),
    ExporterSeries("vllm:generation_tokens_total", _OTHER_MODEL, 1000, counter=True),
    ExporterSeries("vllm:gpu_cache_usage_perc", _m1("a"), 0.25),
    ExporterSeries("vllm:gpu_cache_usage_perc", _m1("b"), 0.75),
    ExporterSeries("vllm:gpu_cache_usage_perc", _OTHER_MODEL, 0.99),
    ExporterSeries("tgi_queue_size", _m1("a"), 2),
    ExporterSeries("tgi_queue_size", _m1("b"), 3),
    ExporterSeries("tgi_queue_size", _OTHER_MODEL, 100),
    ExporterSeries("tgi_request_count", _m1("a"), 4, counter=True),
    ExporterSeries("tgi_request_count", _OTHER_MODEL, 40, counter=True),
    ExporterSeries("nv_inference_pending_request_count", _m1("a"), 7),
    ExporterSeries("nv_inference_pending_request_count", _OTHER_MODEL, 70),
    ExporterSeries("nv_inference_request_success", _m1("a"), 6, counter=True),
    ExporterSeries("nv_inference_request_success", _OTHER_MODEL, 60, counter=True),
    ExporterSeries("DCGM_FI_DEV_FB_USED", {**_m1("a"), "gpu": "0"}, 30),
    ExporterSeries("DCGM_FI_DEV_FB_FREE", {**_m1("a"), "gpu": "0"}, 10),
    ExporterSeries("DCGM_FI_DEV_FB_USED", {**_m1("a"), "gpu": "1"}, 10),
    ExporterSeries("DCGM_FI_DEV_FB_FREE", {**_m1("a"), "gpu": "1"}, 30),
    ExporterSeries("DCGM_FI_DEV_FB_USED", {**_OTHER_MODEL, "gpu": "2"}, 95),
    ExporterSeries("DCGM_FI_DEV_FB_FREE", {**_OTHER_MODEL, "gpu": "2"}, 5),
)

# What each preset returns with PRESET_SELECTOR over PRESET_SERIES.
PRESET_EXPECTED: Mapping[str, float] = {
    "vllm-waiting": 3 + 4,
    "vllm-running": 5 + 6,
    "vllm-request-rate": 2 + 3,
    "vllm-token-rate": 100 + 50,
    "vllm-kv-cache": (0.25 + 0.75) / 2,
    "tgi-queue": 2 + 3,
    "tgi-request-rate": 4,
    "triton-queue": 7,
    "triton-request-rate": 6,
    "dcgm-fb-used": (30 / 40 + 10 / 40) / 2,
}


def load_series(exporter: MetricsExporter, series: Iterable[ExporterSeries]) -> None:
    for item in series:
        if item.counter:
            exporter.set_counter_rate(item.metric, item.value, item.labels)
        else:
            exporter.set_gauge(item.metric, item.value, item.labels)


async def wait_for_sample(
    client: PrometheusClient,
    query: str,
    *,
    until: Callable[[Sample | None], bool],
    timeout: float = 20.0,
) -> Sample | None:
    """Poll an instant query at the current time until `until(sample)` holds.

    Scrapes arrive every second, so a value set on the exporter shows up within a few.
    """
    deadline = time.monotonic() + timeout
    while True:
        sample = await client.instant(query, at=time.time())
        if until(sample) or time.monotonic() > deadline:
            return sample
        await asyncio.sleep(0.25)
