"""Telemetry: per-target values come from the snapshot; every exposed metric is documented."""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import Metric
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.domain.snapshot import TargetSnapshot, TargetStatus
from autoscaler.services import telemetry
from autoscaler.services.telemetry import Telemetry
from tests.unit.services.fake_engine import FakeEngine
from tests.unit.services.test_http_api import engine_with_targets, trace_target

METRICS_DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def labels_of(target: TargetSnapshot, **extra: str) -> dict[str, str]:
    return {"target": str(target.key), "namespace": target.key.namespace, "scaledobject": target.key.name, **extra}


def scrape(metrics: Telemetry) -> list[Metric]:
    """What Prometheus would parse from /metrics."""
    return list(text_string_to_metric_families(metrics.render()))


def value(metrics: Telemetry, name: str, labels: dict[str, str] | None = None) -> float | None:
    wanted = (f"predictive_autoscaler_{name}", labels or {})
    found = [s.value for f in scrape(metrics) for s in f.samples if (s.name, s.labels) == wanted]
    assert len(found) <= 1, f"{wanted} appears {len(found)} times"
    return found[0] if found else None


def exposed_names(metrics: Telemetry) -> set[str]:
    """Names as they appear in the exposition (counters carry `_total`).

    A histogram or counter's `<name>_created` gauge counts as its own family's name:
    docs/metrics.md describes those once for all.
    """
    names = {f"{family.name}_total" if family.type == "counter" else family.name for family in scrape(metrics)}
    return {name for name in names if not (name.endswith("_created") and name.removesuffix("_created") in names)}


DOCUMENTED_METRIC = re.compile(r"^\| `((?:predictive_autoscaler|process|python)_[a-z_]+)` \|", re.MULTILINE)


def documented_names() -> set[str]:
    return set(DOCUMENTED_METRIC.findall(METRICS_DOC.read_text()))


@pytest.fixture
def chat() -> TargetSnapshot:
    return trace_target()


def test_per_target_values_match_the_snapshot(chat: TargetSnapshot) -> None:
    engine = engine_with_targets(chat)
    metrics = Telemetry(engine)
    decision = chat.decision
    assert decision is not None
    labels = labels_of(chat)
    expected = {
        "planned_replicas": decision.replicas,
        "reactive_replicas": decision.reactive_replicas,
        "buffer_replicas": decision.buffer_replicas,
        "forecast_quantile_level": 0.95,
        "decision_predictive": 1.0,
        "forecast_error_mase": 0.91,
        "coverage_target_ratio": chat.target_coverage,
        "coverage_achieved_ratio": 0.94,
        "observed_value": float(chat.history_values[-1]),
        "last_fit_duration_seconds": 0.042,
        "last_update_duration_seconds": 0.0031,
        "target_prometheus_query_errors_total": 2.0,
    }
    for name, number in expected.items():
        assert value(metrics, name, labels) == pytest.approx(number), name
    assert value(metrics, "forecast", {**labels, "horizon": "lead"}) == decision.forecast_at_lead
    assert value(metrics, "forecast", {**labels, "horizon": "node"}) == decision.forecast_at_node_lead
    snapshot = engine.snapshot()
    assert chat.last_sample_at is not None
    assert value(metrics, "data_age_seconds", labels) == pytest.approx(snapshot.generated_at - chat.last_sample_at)
    assert value(metrics, "model_backtest_mase", {**labels, "model": "naive"}) == 1.12
    assert value(metrics, "model_backtest_mase", {**labels, "model": "gbm"}) is None  # failed candidate
    info = labels_of(chat, metric_name=chat.metric_name, metric_kind="load", model="seasonal_naive", mode="active")
    assert value(metrics, "target_info", info) == 1.0
    for status in TargetStatus:
        assert value(metrics, "target_status", {**labels, "status": status.value}) == (
            1.0 if status is TargetStatus.READY else 0.0
        )
        assert value(metrics, "targets", {"status": status.value}) == (1.0 if status is TargetStatus.READY else 0.0)
    assert value(metrics, "snapshot_generation") == snapshot.generation
    assert value(metrics, "snapshot_timestamp_seconds") == snapshot.generated_at


def test_unknown_values_are_absent_not_nan(chat: TargetSnapshot) -> None:
    warming = replace(
        chat,
        status=TargetStatus.WARMING,
        decision=None,
        achieved_coverage=None,
        forecast_error_mase=math.nan,
        last_sample_at=None,
        last_fit_seconds=None,
    )
    metrics = Telemetry(engine_with_targets(warming))
    labels = labels_of(warming)
    for name in (
        "planned_replicas",
        "coverage_achieved_ratio",
        "forecast_error_mase",
        "data_age_seconds",
        "last_fit_duration_seconds",
        "decision_predictive",
    ):
        assert value(metrics, name, labels) is None, name
    assert value(metrics, "forecast", {**labels, "horizon": "lead"}) is None
    assert value(metrics, "target_status", {**labels, "status": "warming"}) == 1.0


def test_collector_follows_each_new_snapshot(chat: TargetSnapshot) -> None:
    engine = FakeEngine()
    metrics = Telemetry(engine)
    assert value(metrics, "snapshot_generation") == 0
    assert value(metrics, "planned_replicas", labels_of(chat)) is None
    engine.publish(chat)
    assert value(metrics, "planned_replicas", labels_of(chat)) is not None
    assert chat.decision is not None
    replanned = replace(chat, decision=replace(chat.decision, replicas=chat.decision.replicas + 5))
    engine.publish(replanned)
    assert value(metrics, "planned_replicas", labels_of(chat)) == chat.decision.replicas + 5
    engine.drop(chat.key)
    assert value(metrics, "planned_replicas", labels_of(chat)) is None


class StatusCode(enum.Enum):
    """Stands in for grpc.StatusCode, which the gRPC service passes to its observer."""

    OK = (0, "ok")
    UNAVAILABLE = (14, "unavailable")


def test_process_metrics_count_events() -> None:
    metrics = Telemetry(process_metrics=False)
    metrics.observe_grpc("GetMetrics", StatusCode.OK, 0.0004)
    metrics.observe_grpc("GetMetrics", "OK", 0.002)
    metrics.observe_grpc("IsActive", StatusCode.UNAVAILABLE, 0.0001)
    metrics.observe_fit("ets", 0.3)
    metrics.observe_update(0.01)
    metrics.count_prometheus_error("default", "PrometheusUnavailableError")
    metrics.count_actuation("created")
    metrics.count_actuation("created")
    assert value(metrics, "grpc_requests_total", {"method": "GetMetrics", "code": "OK"}) == 2
    assert value(metrics, "grpc_requests_total", {"method": "IsActive", "code": "UNAVAILABLE"}) == 1
    assert value(metrics, "grpc_request_duration_seconds_count", {"method": "GetMetrics"}) == 2
    assert value(metrics, "grpc_request_duration_seconds_bucket", {"method": "GetMetrics", "le": "0.0005"}) == 1
    assert value(metrics, "grpc_request_duration_seconds_sum", {"method": "GetMetrics"}) == pytest.approx(0.0024)
    assert value(metrics, "fit_duration_seconds_count", {"model": "ets"}) == 1
    assert value(metrics, "update_duration_seconds_count") == 1
    errors = {"endpoint": "default", "kind": "PrometheusUnavailableError"}
    assert value(metrics, "prometheus_query_errors_total", errors) == 1
    assert value(metrics, "actuation_writes_total", {"result": "created"}) == 2


def test_module_functions_feed_the_default_registry(chat: TargetSnapshot) -> None:
    metrics = telemetry.default_telemetry()
    labels = {"method": "GetMetricSpec", "code": "OK"}
    before = value(metrics, "grpc_requests_total", labels) or 0.0
    telemetry.observe_grpc("GetMetricSpec", "OK", 0.001)
    assert value(metrics, "grpc_requests_total", labels) == before + 1
    telemetry.install_collector(engine_with_targets(chat))
    try:
        assert value(metrics, "planned_replicas", labels_of(chat)) is not None
    finally:
        telemetry.uninstall_collector()
    assert value(metrics, "planned_replicas", labels_of(chat)) is None


def test_every_exposed_metric_is_documented(chat: TargetSnapshot) -> None:
    metrics = Telemetry(engine_with_targets(chat))
    missing = exposed_names(metrics) - documented_names()
    assert not missing, f"add these to docs/metrics.md: {sorted(missing)}"


def test_every_documented_metric_exists(chat: TargetSnapshot) -> None:
    metrics = Telemetry(engine_with_targets(chat))
    stale = documented_names() - exposed_names(metrics)
    assert not stale, f"docs/metrics.md names metrics the daemon does not expose: {sorted(stale)}"


def test_metric_names_share_the_prefix(chat: TargetSnapshot) -> None:
    ours = exposed_names(Telemetry(engine_with_targets(chat), process_metrics=False))
    assert ours and all(name.startswith("predictive_autoscaler_") for name in ours)


DASHBOARD = METRICS_DOC.parents[1] / "deploy" / "grafana" / "predictive-autoscaler-dashboard.json"


def test_dashboard_uses_only_exposed_metrics(chat: TargetSnapshot) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "target"} <= variables
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for e in expressions
        for name in re.findall(r"predictive_autoscaler_\w+", e)
    }
    metrics = Telemetry(engine_with_targets(chat))
    metrics.observe_grpc("GetMetrics", "OK", 0.001)
    unknown = used - exposed_names(metrics)
    assert not unknown, f"the dashboard queries metrics that do not exist: {sorted(unknown)}"
    assert any('target=~"$target"' in e for e in expressions)


def test_the_refit_queue_is_exported(chat: TargetSnapshot) -> None:
    engine = engine_with_targets(chat)
    engine._snapshot = replace(engine.snapshot(), fits_waiting=7, fits_running=2)
    metrics = Telemetry(engine)
    assert value(metrics, "model_fits", {"state": "waiting"}) == 7
    assert value(metrics, "model_fits", {"state": "running"}) == 2
