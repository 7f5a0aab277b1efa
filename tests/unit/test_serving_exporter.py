"""The serving arithmetic of the closed-loop tests' exporter (tests/e2e/serving_exporter.py)."""

from __future__ import annotations

from wsgiref.util import setup_testing_defaults

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.serving_exporter import (
    KV_CACHE,
    RUNNING,
    SUCCESS_TOTAL,
    WAITING,
    ArrivalSchedule,
    ServedWorkload,
    ServingExporter,
    ServingModel,
    ServingParams,
    history_series,
)
from tests.integration.prometheus_server import EXPORTER_LABELS

PARAMS = ServingParams(capacity_per_replica=4.0, service_seconds=2.0, patience_seconds=30.0)


def run(model: ServingModel, *, seconds: int, rate: float, pods: tuple[str, ...], start: float = 0.0) -> float:
    """Step once a second; returns the time of the last step."""
    now = start
    for _ in range(seconds):
        now += 1.0
        model.step(now=now, dt=1.0, arrival_rate=rate, ready_pods=pods)
    return now


@pytest.mark.parametrize(
    ("rate", "pods", "served", "backlog", "kv_cache"),
    [
        (6.0, ("a", "b"), 6.0, 0.0, 0.75),  # under capacity: all served, no queue
        (8.0, ("a", "b"), 8.0, 0.0, 1.0),  # exactly at capacity
        (10.0, ("a", "b"), 8.0, 2.0, 1.0),  # saturated: completions stop at capacity, the queue grows
        (10.0, (), 0.0, 10.0, None),  # no ready pod: nothing served, nothing exported
    ],
)
def test_one_step_serves_at_most_the_ready_capacity(
    rate: float, pods: tuple[str, ...], served: float, backlog: float, kv_cache: float | None
) -> None:
    model = ServingModel(PARAMS)
    metrics = model.step(now=1.0, dt=1.0, arrival_rate=rate, ready_pods=pods)
    assert model.totals.served == pytest.approx(served)
    assert model.backlog == pytest.approx(backlog)
    assert set(metrics) == set(pods)
    for pod_metrics in metrics.values():
        # Little's law: in flight = throughput x service time, so a saturated pod fills its slots.
        assert pod_metrics.running == pytest.approx(served / len(pods) * PARAMS.service_seconds)
        assert pod_metrics.kv_cache_usage == pytest.approx(kv_cache)
        assert pod_metrics.waiting == pytest.approx(backlog / len(pods))
        assert pod_metrics.completed_total == pytest.approx(served / len(pods))


def test_a_backlog_drains_at_the_spare_capacity_of_the_pods_that_arrive() -> None:
    model = ServingModel(PARAMS)
    now = run(model, seconds=10, rate=10.0, pods=("a", "b"))  # 2 short by 2/s for 10 s
    assert model.backlog == pytest.approx(20.0)
    # Two more pods: 16/s against 10/s arriving drains the 20 queued in 20/6 s.
    now = run(model, seconds=3, rate=10.0, pods=("a", "b", "c", "d"), start=now)
    assert model.backlog == pytest.approx(2.0)
    run(model, seconds=1, rate=10.0, pods=("a", "b", "c", "d"), start=now)
    assert model.backlog == pytest.approx(0.0)
    assert model.totals.abandoned == 0.0


def test_requests_queued_past_their_patience_give_up_oldest_first() -> None:
    model = ServingModel(ServingParams(capacity_per_replica=4.0, service_seconds=2.0, patience_seconds=5.0))
    now = run(model, seconds=4, rate=3.0, pods=())
    assert model.backlog == pytest.approx(12.0) and model.totals.abandoned == 0.0
    now = run(model, seconds=2, rate=3.0, pods=(), start=now)  # at t=6 the cohort of t=1 is 5 s old
    assert model.totals.abandoned == pytest.approx(3.0)
    # One pod serves the oldest left (t=2) first, faster than they arrive: nobody else gives up.
    run(model, seconds=3, rate=3.0, pods=("a",), start=now)
    assert model.totals.abandoned == pytest.approx(3.0)
    assert model.totals.arrived == pytest.approx(model.totals.served + model.totals.abandoned + model.backlog)


def test_requests_are_conserved_whatever_the_pods_do() -> None:
    model = ServingModel(PARAMS)
    generator = np.random.default_rng(7)
    now = 0.0
    for _ in range(300):
        now += 0.5
        pods = tuple(f"p{i}" for i in range(int(generator.integers(0, 5))))
        model.step(now=now, dt=0.5, arrival_rate=float(generator.uniform(0, 20)), ready_pods=pods)
    totals = model.totals
    assert totals.abandoned > 0 and totals.served > 0
    assert totals.arrived == pytest.approx(totals.served + totals.abandoned + model.backlog)


def test_each_pod_counts_its_own_completions_and_a_removed_pod_takes_its_counter_away() -> None:
    model = ServingModel(PARAMS)
    run(model, seconds=5, rate=6.0, pods=("a", "b"))
    metrics = model.step(now=6.0, dt=1.0, arrival_rate=6.0, ready_pods=("b", "c"))
    assert metrics["b"].completed_total == pytest.approx(18.0)  # 3/s for 6 s
    assert metrics["c"].completed_total == pytest.approx(3.0)  # a new pod starts from zero
    metrics = model.step(now=7.0, dt=1.0, arrival_rate=6.0, ready_pods=("a", "b", "c"))
    assert metrics["a"].completed_total == pytest.approx(2.0)  # a pod that came back is a new pod


def test_a_step_must_move_time_forward() -> None:
    with pytest.raises(ValueError, match="dt must be positive"):
        ServingModel(PARAMS).step(now=1.0, dt=0.0, arrival_rate=1.0, ready_pods=("a",))


def test_the_arrival_schedule_holds_its_first_and_last_bins() -> None:
    schedule = ArrivalSchedule(values=np.array([1.0, 2.0, 3.0]), wall_step_seconds=10.0, started_at=100.0)
    assert [schedule.rate_at(t) for t in (50.0, 100.0, 109.9, 110.0, 125.0, 500.0)] == [1, 1, 1, 2, 3, 3]
    assert schedule.step_time(2) == 120.0


def _workload(model: ServingModel) -> ServedWorkload:
    schedule = ArrivalSchedule(values=np.array([6.0]), wall_step_seconds=10.0, started_at=0.0)
    return ServedWorkload(namespace="default", deployment="chat", model_name="m", model=model, arrivals=schedule)


def test_history_series_carry_the_scrape_labels_and_the_live_part_continues_them() -> None:
    workload = _workload(ServingModel(PARAMS))
    rates = [(float(t), 6.0) for t in range(5, 55, 5)]  # 10 points, 5 s apart
    series = history_series(
        workload, rates=rates, pods_at=lambda at, _rate: ("chat-0", "old-1") if at < 30 else ("chat-0",), dt=5.0
    )
    by_key = {(s.metric, s.labels["pod"]): s for s in series}
    assert set(by_key) == {(m, p) for m in (WAITING, RUNNING, SUCCESS_TOTAL, KV_CACHE) for p in ("chat-0", "old-1")}
    assert all({**EXPORTER_LABELS, "model_name": "m"}.items() <= s.labels.items() for s in series)
    assert len(by_key[(SUCCESS_TOTAL, "old-1")].points) == 5  # it left at t=30
    kept = by_key[(SUCCESS_TOTAL, "chat-0")].points
    assert [t for t, _ in kept] == [t for t, _ in rates]
    assert kept[-1][1] == pytest.approx(5 * 15.0 + 5 * 20.0)  # 3/s shared, then 4/s alone (capacity)
    live = workload.model.step(now=55.0, dt=5.0, arrival_rate=6.0, ready_pods=("chat-0",))
    assert live["chat-0"].completed_total == pytest.approx(kept[-1][1] + 20.0)


def test_the_exposition_keeps_vllm_names_even_when_openmetrics_is_asked_for() -> None:
    workload = _workload(ServingModel(PARAMS))
    workload.pods = workload.model.step(now=1.0, dt=1.0, arrival_rate=10.0, ready_pods=("chat-0", "chat-1"))
    exporter = ServingExporter(core=None, workloads=[workload])
    environ: dict[str, object] = {}
    setup_testing_defaults(environ)
    environ["HTTP_ACCEPT"] = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    headers: list[tuple[str, str]] = []
    body = b"".join(exporter.wsgi_app(environ, lambda _status, sent: headers.extend(sent)))
    assert dict(headers)["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["vllm:request_success"].type == "counter"
    samples = {(s.name, s.labels["pod"]): s.value for f in families.values() for s in f.samples}
    assert samples[(SUCCESS_TOTAL, "chat-1")] == pytest.approx(4.0)
    assert samples[(WAITING, "chat-0")] == pytest.approx(1.0)
    assert samples[(RUNNING, "chat-0")] == pytest.approx(PARAMS.slots)
    assert samples[(KV_CACHE, "chat-0")] == pytest.approx(1.0)
