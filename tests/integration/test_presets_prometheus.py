"""Every query of every preset, run by the real Prometheus over the engines' own metrics.

tests/data/exposition/<dataset>/<pod>.prom is what one pod of an engine answers on
/metrics (text format 0.0.4, names and labels as that engine's release writes them);
docs/presets.md says which release each dataset follows. Each dataset holds several pods
of one model and a decoy pod (or model) that the test's selector must leave out; vLLM has
the pre-rename and the current KV-cache name in separate datasets.

The files are backfilled into TSDB blocks as if scraped every 15 s: each pod started
`UPTIME_SECONDS` before the scrape in its file, its counters (and histogram parts) grew
linearly from zero to the value written, and its gauges held their value. So a counter's
rate is its value / `UPTIME_SECONDS`. Scrape labels (job = dataset, pod, instance,
namespace) are added where the exposition has none, as `honor_labels: true` does.

Every query goes through the product's `PrometheusClient.instant`, which refuses a
result of more than one series, and must give exactly the value the files imply.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.adapters.prometheus import PrometheusClient, PrometheusEndpoint
from autoscaler.domain.presets import PRESETS, expand_preset, validate_selector
from autoscaler.domain.signals import SignalKind
from tests.integration.prometheus_server import BackfillSeries, PrometheusServer, require_binaries

pytestmark = pytest.mark.prometheus

EXPOSITION = Path(__file__).resolve().parents[1] / "data" / "exposition"
UPTIME_SECONDS = 600.0
SCRAPE_INTERVAL_SECONDS = 15.0
NAMESPACE = "llm"

ARRIVALS, COMPLETIONS, WAITING = SignalKind.ARRIVALS, SignalKind.COMPLETIONS, SignalKind.WAITING
RUNNING, UTILIZATION, PODS = SignalKind.RUNNING, SignalKind.UTILIZATION, SignalKind.PODS


@dataclass(frozen=True)
class Case:
    preset: str
    selector: str
    expected: Mapping[SignalKind, float]


# vLLM: three llama-3-8b pods (rates 2 + 1 + 3 requests/s, 1200 + 600 + 1800 prompt and
# generated tokens/s; waiting 3 + 0 + 5; running 12 + 8 + 16; KV cache 0.5, 0.25, 0.75)
# and a mistral-7b decoy, once under each KV-cache name.
VLLM_REQUESTS = {COMPLETIONS: 6.0, WAITING: 8.0, RUNNING: 36.0, PODS: 3.0}
VLLM_EXPECTED: Mapping[str, Mapping[SignalKind, float]] = {
    "vllm": VLLM_REQUESTS,
    "vllm-waiting": VLLM_REQUESTS,
    "vllm-running": VLLM_REQUESTS,
    "vllm-request-rate": VLLM_REQUESTS,
    "vllm-token-rate": {COMPLETIONS: 3600.0, PODS: 3.0},
    "vllm-kv-cache": {UTILIZATION: 0.5, PODS: 3.0},
}
VLLM_LLAMA = 'model_name="llama-3-8b"'
# Both datasets at once: a fleet half-way through the upgrade past the KV-cache rename.
VLLM_UPGRADE = {
    name: {kind: value if kind is UTILIZATION else 2 * value for kind, value in expected.items()}
    for name, expected in VLLM_EXPECTED.items()
}
POOL_NEW = {
    "inference-pool": {ARRIVALS: 10.0, WAITING: 10.0, PODS: 4.0},
    "inference-pool-kv-cache": {UTILIZATION: 0.6, PODS: 4.0},
}
POOL_OLD = {
    "inference-pool": {ARRIVALS: 3.0, WAITING: 3.0, PODS: 2.0},
    "inference-pool-kv-cache": {UTILIZATION: 0.3, PODS: 2.0},
}
# llm-d's router exports each value under its llm_d_epp_* name and the older one: read once.
POOL_LLM_D = {
    "inference-pool": {ARRIVALS: 4.5, WAITING: 9.0, PODS: 3.0},
    "inference-pool-kv-cache": {UTILIZATION: 0.45, PODS: 3.0},
}
TRITON = {WAITING: 4.0, COMPLETIONS: 5.0, PODS: 2.0}

CASES: dict[str, Case] = {
    **{
        f"{name}@{dataset}": Case(name, f'job="{dataset}",{VLLM_LLAMA}', expected)
        for dataset in ("vllm-gpu-cache-name", "vllm-kv-cache-name")
        for name, expected in VLLM_EXPECTED.items()
    },
    **{f"{name}@vllm-upgrade": Case(name, VLLM_LLAMA, expected) for name, expected in VLLM_UPGRADE.items()},
    "sglang": Case(
        "sglang", 'job="sglang",model_name="llama-3-8b"', {COMPLETIONS: 6.0, WAITING: 4.0, RUNNING: 30.0, PODS: 2.0}
    ),
    "sglang-token-usage": Case(
        "sglang-token-usage", 'job="sglang",model_name="llama-3-8b"', {UTILIZATION: 0.4, PODS: 2.0}
    ),
    # TGI labels nothing with the model: its pods are selected by name.
    "tgi-queue": Case("tgi-queue", 'pod=~"tgi-llama-.*"', {WAITING: 8.0, COMPLETIONS: 8.5, RUNNING: 56.0, PODS: 2.0}),
    "tgi-request-rate": Case("tgi-request-rate", 'pod=~"tgi-llama-.*"', {ARRIVALS: 10.0, WAITING: 8.0, PODS: 2.0}),
    "triton-queue": Case("triton-queue", 'job="triton",model="llama"', TRITON),
    "triton-request-rate": Case("triton-request-rate", 'job="triton",model="llama"', TRITON),
    # The exporter's pod/namespace labels name the GPU's workload (75 %, 50 %, 25 % used).
    "dcgm-fb-used": Case("dcgm-fb-used", 'namespace="llm",pod=~"vllm-llama-.*"', {UTILIZATION: 0.5, PODS: 3.0}),
    **{f"{name}@v1.5": Case(name, 'pod=~"epp-llama-.*"', expected) for name, expected in POOL_NEW.items()},
    **{f"{name}@v1.0": Case(name, 'pod=~"epp-gemma-.*"', expected) for name, expected in POOL_OLD.items()},
    **{f"{name}@llm-d": Case(name, 'job="llm-d-router-v0.10"', expected) for name, expected in POOL_LLM_D.items()},
    # Two frontends, one from before active_requests: (15 + 9) active, 3 + 1 queued.
    "dynamo": Case(
        "dynamo", 'job="dynamo",model="llama-3-70b"', {COMPLETIONS: 7.0, WAITING: 4.0, RUNNING: 20.0, PODS: 2.0}
    ),
}


def _growing_names(text: str) -> set[str]:
    """Names of the samples that only grow: counters and histogram parts.

    The parser reports a counter's samples as `<family>_total` even where the engine
    wrote the bare family name (TGI, Triton), so the family name is kept too.
    """
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type in ("counter", "histogram"):
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    return names


def _pod_series(path: Path, *, scrape_time: float) -> Iterator[BackfillSeries]:
    text = path.read_text()
    growing = _growing_names(text)
    # Without its TYPE lines the parser keeps every sample under the name written,
    # which is the name Prometheus stores.
    as_written = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    scrape_labels = {
        "job": path.parent.name,
        "instance": f"{path.stem}:8000",
        "namespace": NAMESPACE,
        "pod": path.stem,
    }
    start = scrape_time - UPTIME_SECONDS
    steps = round(UPTIME_SECONDS / SCRAPE_INTERVAL_SECONDS)
    times = [start + index * SCRAPE_INTERVAL_SECONDS for index in range(steps + 1)]
    for family in text_string_to_metric_families(as_written):
        for sample in family.samples:
            if sample.name in growing:
                points = [(at, sample.value * (at - start) / UPTIME_SECONDS) for at in times]
            else:
                points = [(at, sample.value) for at in times]
            yield BackfillSeries(sample.name, {**scrape_labels, **sample.labels}, points)


@pytest.fixture(scope="module")
def exposition_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, float]]:
    """One Prometheus holding every dataset, and the time of the scrape the files show."""
    require_binaries()
    scrape_time = math.floor(time.time()) - 60.0
    server = PrometheusServer(tmp_path_factory.mktemp("presets"))
    server.backfill(
        [
            series
            for path in sorted(EXPOSITION.glob("*/*.prom"))
            for series in _pod_series(path, scrape_time=scrape_time)
        ]
    )
    with server:
        yield server, scrape_time


@pytest.fixture
async def exposition_client(
    exposition_prometheus: tuple[PrometheusServer, float],
) -> AsyncIterator[PrometheusClient]:
    server, _ = exposition_prometheus
    client = PrometheusClient(PrometheusEndpoint(name="default", url=server.url, retries=1, backoff_seconds=0.05))
    yield client
    await client.close()


def test_every_query_of_every_preset_has_a_case() -> None:
    covered = {case.preset for case in CASES.values()}
    assert covered == set(PRESETS)
    for name, case in CASES.items():
        assert set(case.expected) == {kind for kind, _ in PRESETS[case.preset].signals}, name


@pytest.mark.parametrize("case_name", sorted(CASES))
async def test_preset_gives_one_series_with_the_expected_value(
    exposition_prometheus: tuple[PrometheusServer, float], exposition_client: PrometheusClient, case_name: str
) -> None:
    case = CASES[case_name]
    _, scrape_time = exposition_prometheus
    selector = validate_selector(case.selector)

    for signal in expand_preset(case.preset, selector, step_seconds=60):
        sample = await exposition_client.instant(signal.query, at=scrape_time)
        assert sample is not None, f"{case_name} {signal.kind}: {signal.query} returned no data"
        assert sample.value == pytest.approx(case.expected[signal.kind], rel=1e-9), signal.query


async def test_a_selector_that_matches_no_pod_gives_missing_data_not_zero(
    exposition_prometheus: tuple[PrometheusServer, float], exposition_client: PrometheusClient
) -> None:
    """A selector that matches no pod gives no sample for any signal, never a zero."""
    _, scrape_time = exposition_prometheus
    for name in sorted(PRESETS):
        for signal in expand_preset(name, 'pod="not-scraped"', step_seconds=60):
            assert await exposition_client.instant(signal.query, at=scrape_time) is None, signal.query
