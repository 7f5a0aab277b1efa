"""Fixtures for tests against a real Prometheus; the machinery is in prometheus_server.py.

Fixture API (reuse these rather than starting more servers: each costs about a second):

- `metrics_exporter` (session): a started `MetricsExporter` scraped by `prometheus`. It
  carries `PRESET_SERIES` (every preset's metrics for model_name "m1" plus an "m2" decoy)
  and `demo_requests_waiting{job="exporter",instance="exporter"}` = 0. Tests may add their
  own series with `set_gauge` / `set_counter_rate` and `remove` them; change the shared ones
  only if you put them back.
- `prometheus_history` (session): `TraceHistory` -- the points of `demo_requests_waiting`
  backfilled from the azure_llm2023_conv_rate trace: 300 points 60 s apart, the last at
  `end` (one to two minutes before the server started). Same labels as the live series,
  so a range query over [start, now] sees the trace, then live scrapes.
- `prometheus` (session): the shared started `PrometheusServer` (1 s scrapes of
  `metrics_exporter`; trace history and 10 min of counter history backfilled). Do not
  stop or restart it; use `prometheus_factory` for that.
- `prometheus_factory` (function): `make(*, backfill=(), scrape=True, tls=None)` starts a
  private server in its own temp dir (own data dir, so restart tests are isolated) and
  stops it at teardown. `server.restart()` keeps its port and data.
- `prometheus_endpoint` (function): a `PrometheusEndpoint` named "default" for `prometheus`
  (timeout 5 s, 1 retry, 50 ms backoff).
- `prometheus_client` (function, async): a `PrometheusClient` on it, closed afterwards.

Helpers to import from tests.integration.prometheus_server: `wait_for_sample`,
`trace_points`, `BackfillSeries`, `EXPORTER_LABELS`, `PRESET_SELECTOR`, `PRESET_EXPECTED`,
`make_tls_files`, `BearerTokenProxy`.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoscaler.adapters.prometheus import PrometheusClient, PrometheusEndpoint
from tests.integration.prometheus_server import (
    COUNTER_HISTORY_SECONDS,
    EXPORTER_LABELS,
    HISTORY_METRIC,
    HISTORY_POINTS,
    HISTORY_STEP_SECONDS,
    HISTORY_TRACE,
    PRESET_SERIES,
    BackfillSeries,
    MetricsExporter,
    Point,
    PrometheusServer,
    TLSFiles,
    load_series,
    require_binaries,
    trace_points,
)


@dataclass(frozen=True)
class TraceHistory:
    metric: str
    step_seconds: float
    points: Sequence[Point]

    @property
    def end(self) -> float:
        return self.points[-1][0]

    @property
    def start(self) -> float:
        return self.points[0][0]


ServerFactory = Callable[..., PrometheusServer]


@pytest.fixture(scope="session")
def metrics_exporter() -> Iterator[MetricsExporter]:
    require_binaries()
    exporter = MetricsExporter()
    load_series(exporter, PRESET_SERIES)
    exporter.set_gauge(HISTORY_METRIC, 0.0)
    with exporter:
        yield exporter


@pytest.fixture(scope="session")
def prometheus_history() -> TraceHistory:
    now = time.time()
    end = math.floor(now / HISTORY_STEP_SECONDS) * HISTORY_STEP_SECONDS - HISTORY_STEP_SECONDS
    points = trace_points(HISTORY_TRACE, end=end, step_seconds=HISTORY_STEP_SECONDS, count=HISTORY_POINTS)
    return TraceHistory(HISTORY_METRIC, HISTORY_STEP_SECONDS, points)


@pytest.fixture(scope="session")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory,
    metrics_exporter: MetricsExporter,
    prometheus_history: TraceHistory,
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), scrape_target=metrics_exporter.address)
    counters_end = math.floor(time.time()) - 1.0
    server.backfill(
        [
            BackfillSeries(HISTORY_METRIC, EXPORTER_LABELS, prometheus_history.points),
            *metrics_exporter.counter_history(
                start=counters_end - COUNTER_HISTORY_SECONDS, end=counters_end, step_seconds=1.0
            ),
        ]
    )
    with server:
        yield server


@pytest.fixture
def prometheus_factory(tmp_path: Path, metrics_exporter: MetricsExporter) -> Iterator[ServerFactory]:
    servers: list[PrometheusServer] = []

    def make(
        *, backfill: Sequence[BackfillSeries] = (), scrape: bool = True, tls: TLSFiles | None = None
    ) -> PrometheusServer:
        server = PrometheusServer(
            tmp_path / f"prometheus-{len(servers)}",
            scrape_target=metrics_exporter.address if scrape else None,
            tls=tls,
        )
        servers.append(server)
        if backfill:
            server.backfill(backfill)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def prometheus_endpoint(prometheus: PrometheusServer) -> PrometheusEndpoint:
    return PrometheusEndpoint(name="default", url=prometheus.url, retries=1, backoff_seconds=0.05)


@pytest.fixture
async def prometheus_client(prometheus_endpoint: PrometheusEndpoint) -> AsyncIterator[PrometheusClient]:
    client = PrometheusClient(prometheus_endpoint)
    yield client
    await client.close()
