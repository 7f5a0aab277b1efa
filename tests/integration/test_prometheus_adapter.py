"""The Prometheus adapter against a real Prometheus fed with trace history and live scrapes."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import pytest

from autoscaler.adapters.prometheus import (
    MAX_POINTS_PER_REQUEST,
    PrometheusClient,
    PrometheusDataError,
    PrometheusEndpoint,
    PrometheusQueryError,
    PrometheusUnavailableError,
    Sample,
)
from autoscaler.domain.presets import PRESETS, expand_preset
from tests.integration import prometheus_server
from tests.integration.conftest import ServerFactory, TraceHistory
from tests.integration.prometheus_server import (
    EXPORTER_LABELS,
    PRESET_EXPECTED,
    PRESET_SELECTOR,
    BackfillSeries,
    BearerTokenProxy,
    MetricsExporter,
    PrometheusHarnessError,
    PrometheusServer,
    free_port,
    make_tls_files,
    trace_points,
    wait_for_sample,
)

pytestmark = pytest.mark.prometheus

HISTORY_QUERY = 'demo_requests_waiting{job="exporter"}'


async def test_instant_returns_the_backfilled_trace_values(
    prometheus_client: PrometheusClient, prometheus_history: TraceHistory
) -> None:
    for timestamp, value in prometheus_history.points[:: len(prometheus_history.points) // 7]:
        assert await prometheus_client.instant(HISTORY_QUERY, at=timestamp) == Sample(value, timestamp)


async def test_range_returns_the_trace(prometheus_client: PrometheusClient, prometheus_history: TraceHistory) -> None:
    points = await prometheus_client.range(
        HISTORY_QUERY,
        start=prometheus_history.start,
        end=prometheus_history.end,
        step_seconds=prometheus_history.step_seconds,
    )
    assert points == list(prometheus_history.points)


async def test_long_range_is_split_and_returns_every_point_once(
    prometheus: PrometheusServer, prometheus_client: PrometheusClient, prometheus_history: TraceHistory
) -> None:
    end = prometheus_history.end
    start = end - 4 * 3600
    # The server itself refuses the range in one request, so the client must split it.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{prometheus.url}/api/v1/query_range",
            params={"query": HISTORY_QUERY, "start": str(start), "end": str(end), "step": "1"},
        ) as response,
    ):
        assert response.status == 400
        assert "11,000 points" in (await response.json())["error"]

    points = await prometheus_client.range(HISTORY_QUERY, start=start, end=end, step_seconds=1.0)

    assert len(points) == 4 * 3600 + 1 > MAX_POINTS_PER_REQUEST
    assert [timestamp for timestamp, _ in points] == [start + second for second in range(4 * 3600 + 1)]
    # Between trace samples, Prometheus repeats the latest one (lookback), so each
    # second holds the trace value of its minute.
    by_minute = dict(prometheus_history.points)
    step = prometheus_history.step_seconds
    assert all(value == by_minute[timestamp - (timestamp - start) % step] for timestamp, value in points)


async def test_several_series_are_an_error_that_names_the_label_sets(prometheus_client: PrometheusClient) -> None:
    with pytest.raises(PrometheusDataError) as raised:
        await prometheus_client.instant("vllm:num_requests_waiting", at=time.time())
    message = str(raised.value)
    assert "3 series" in message
    assert 'model_name="m2"' in message
    assert "'default'" in message

    with pytest.raises(PrometheusDataError, match=r"series, exactly one is required: .* and \d+ more"):
        await prometheus_client.range('{job="exporter"}', start=time.time() - 60, end=time.time(), step_seconds=15)


@pytest.mark.parametrize(
    "query",
    [
        "metric_that_does_not_exist",
        "0/0",
        "1/0",
        "-1/0",
        'demo_requests_waiting{job="exporter"} * 0 / 0',
        'demo_requests_waiting{job="exporter"} / 0 + 1',
    ],
)
async def test_missing_nan_and_inf_are_missing_data_not_zero(prometheus_client: PrometheusClient, query: str) -> None:
    now = time.time()
    assert await prometheus_client.instant(query, at=now) is None
    assert await prometheus_client.range(query, start=now - 120, end=now, step_seconds=10) == []


async def test_scalar_results_are_samples(prometheus_client: PrometheusClient) -> None:
    assert await prometheus_client.instant("1 + 1.5", at=1_700_000_000.0) == Sample(2.5, 1_700_000_000.0)


@pytest.mark.parametrize(
    ("query", "reason"),
    [('"text"', "returned a string"), ('demo_requests_waiting{job="exporter"}[5m]', "range vector")],
)
async def test_non_numeric_results_are_rejected(prometheus_client: PrometheusClient, query: str, reason: str) -> None:
    with pytest.raises(PrometheusDataError, match=reason):
        await prometheus_client.instant(query, at=time.time())


@pytest.mark.parametrize(
    ("query", "error_type", "status"),
    [
        ("sum(rate(", "bad_data", 400),
        ("vllm:num_requests_waiting + on() vllm:num_requests_running", "execution", 422),
    ],
)
async def test_rejected_queries_are_query_errors_and_not_retried(
    prometheus: PrometheusServer, query: str, error_type: str, status: int
) -> None:
    requests: list[aiohttp.TraceRequestStartParams] = []

    async def count(_: object, __: object, params: aiohttp.TraceRequestStartParams) -> None:
        requests.append(params)

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(count)
    endpoint = PrometheusEndpoint("default", prometheus.url, retries=3, backoff_seconds=0.01)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as session:
        client = PrometheusClient(endpoint, session=session)
        with pytest.raises(PrometheusQueryError) as raised:
            await client.instant(query, at=time.time())
    assert len(requests) == 1
    assert (raised.value.error_type, raised.value.status) == (error_type, status)
    assert raised.value.error
    assert query[:8] in str(raised.value)


async def test_unreachable_endpoint_is_unavailable_after_the_backoff() -> None:
    endpoint = PrometheusEndpoint(
        "down", f"http://127.0.0.1:{free_port()}", retries=3, backoff_seconds=0.05, max_backoff_seconds=0.15
    )
    expected_rng = random.Random(11)
    expected_sleep = sum(expected_rng.uniform(0, min(0.15, 0.05 * 2**attempt)) for attempt in range(3))
    started = time.monotonic()
    async with PrometheusClient(endpoint, rng=random.Random(11)) as client:
        with pytest.raises(PrometheusUnavailableError) as raised:
            await client.instant("up", at=time.time())
    elapsed = time.monotonic() - started
    assert raised.value.attempts == 4
    assert raised.value.endpoint == "down"
    assert "'down'" in str(raised.value)
    assert isinstance(raised.value.__cause__, aiohttp.ClientConnectionError)
    assert expected_sleep <= elapsed < expected_sleep + 2.0


async def test_tls_with_the_ca_file_and_refused_without_it(prometheus_factory: ServerFactory, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    server = prometheus_factory(scrape=False, tls=tls)
    assert server.url.startswith("https://")

    trusted = PrometheusEndpoint("tls", server.url, ca_file=str(tls.ca_cert))
    async with PrometheusClient(trusted) as client:
        assert await client.instant("vector(3)", at=1_700_000_000.0) == Sample(3.0, 1_700_000_000.0)

    untrusted = PrometheusEndpoint("tls", server.url, retries=3, backoff_seconds=1.0)
    async with PrometheusClient(untrusted) as client:
        with pytest.raises(PrometheusUnavailableError, match="TLS") as raised:
            await client.instant("vector(3)", at=1_700_000_000.0)
    assert raised.value.attempts == 1  # a certificate problem is not retried
    assert isinstance(raised.value.__cause__, aiohttp.ClientSSLError)

    skipping = PrometheusEndpoint("tls", server.url, insecure_skip_verify=True)
    async with PrometheusClient(skipping) as client:
        assert await client.instant("vector(3)", at=1_700_000_000.0) == Sample(3.0, 1_700_000_000.0)


async def test_bearer_token_is_read_from_its_file_and_never_shown(prometheus: PrometheusServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-Secret-token\n")
    proxy = BearerTokenProxy(prometheus.url, expected_token="first-Secret-token")
    await proxy.start()
    try:
        endpoint = PrometheusEndpoint("auth", proxy.url, bearer_token_file=str(token_file), retries=0)
        async with PrometheusClient(endpoint) as client:
            assert await client.instant("vector(1)", at=1_700_000_000.0) == Sample(1.0, 1_700_000_000.0)

            # Rotation: the next request reads the new token.
            token_file.write_text("second-Secret-token")
            proxy.expected_token = "second-Secret-token"
            assert await client.instant("vector(2)", at=1_700_000_000.0) == Sample(2.0, 1_700_000_000.0)

            token_file.write_text("revoked-Secret-token")
            with pytest.raises(PrometheusQueryError) as raised:
                await client.instant("vector(1)", at=1_700_000_000.0)
            shown = [repr(endpoint), str(endpoint), repr(client), str(raised.value), repr(raised.value)]
    finally:
        await proxy.stop()

    assert proxy.seen == ["Bearer first-Secret-token", "Bearer second-Secret-token", "Bearer revoked-Secret-token"]
    assert (raised.value.error_type, raised.value.status) == ("http_401", 401)
    assert not any("Secret" in text for text in shown)


@pytest.mark.parametrize("preset", sorted(PRESET_EXPECTED))
async def test_every_preset_is_valid_promql_with_the_documented_value(
    prometheus_client: PrometheusClient, preset: str
) -> None:
    # The query each preset is named after, on live scrapes; every query of every preset
    # is checked against engine exposition samples in test_presets_prometheus.py.
    query = expand_preset(preset, PRESET_SELECTOR, step_seconds=60)[0].query
    expected = PRESET_EXPECTED[preset]

    sample = await wait_for_sample(
        prometheus_client, query, until=lambda got: got is not None and got.value == pytest.approx(expected, rel=0.02)
    )

    assert sample is not None, f"{preset}: {query} returned no data"
    assert sample.value == pytest.approx(expected, rel=0.02), query


def test_every_preset_has_an_expected_value() -> None:
    assert set(PRESET_EXPECTED) <= set(PRESETS)


async def test_history_survives_a_restart_on_the_same_data_dir(
    prometheus_factory: ServerFactory, metrics_exporter: MetricsExporter
) -> None:
    end = float(int(time.time()) // 60 * 60 - 60)
    history = trace_points("azure_llm2023_conv_rate", end=end, step_seconds=10, count=120)
    server = prometheus_factory(backfill=[BackfillSeries("restart_history", EXPORTER_LABELS, history)])
    metrics_exporter.set_gauge("restart_live", 42.0)
    try:
        endpoint = PrometheusEndpoint("restart", server.url, retries=5, backoff_seconds=0.1)
        async with PrometheusClient(endpoint) as client:
            await wait_for_sample(client, "restart_live", until=lambda got: got is not None)
            await asyncio.sleep(2)  # let a few 1 s grid points fall after the first scrape
            live_before = await client.range("restart_live", start=end, end=time.time(), step_seconds=1)
            server.restart()
            assert server.url == endpoint.url
            backfilled = await client.range("restart_history", start=history[0][0], end=end, step_seconds=10)
            live_after = await client.range("restart_live", start=end, end=live_before[-1][0], step_seconds=1)
    finally:
        metrics_exporter.remove("restart_live")
    assert backfilled == history
    assert live_before
    assert live_after == live_before


def test_a_missing_binary_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(prometheus_server, "PROMETHEUS_BINARY", tmp_path / "prometheus")
    with pytest.raises(PrometheusHarnessError, match=r"apt-get install -y prometheus"):
        PrometheusServer(tmp_path).start()
