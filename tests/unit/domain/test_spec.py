"""scalerMetadata parsing: a table of (metadata, key named in the error), KEDA-style."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.domain.errors import SpecError
from autoscaler.domain.spec import (
    KEYS,
    keys_markdown_table,
    metadata_digest,
    metric_name_for,
    parse_duration,
    parse_spec,
    target_key,
)
from autoscaler.domain.types import MetricKind

BASE = {"query": "sum(rate(http_requests_total[2m]))", "capacityPerReplica": "20"}


def with_base(**changes: str) -> dict[str, str]:
    return {**BASE, **changes}


def test_defaults_are_documented_and_sane() -> None:
    spec = parse_spec(BASE)
    assert spec.metric_kind is MetricKind.LOAD
    assert spec.target_coverage == 0.95
    assert spec.coverage_basis == "steps"
    assert parse_spec({**BASE, "coverageBasis": "demand"}).coverage_basis == "demand"
    assert spec.lead_time_seconds == 180
    assert spec.step_seconds == 60
    assert spec.lead_steps == 3
    assert spec.node_lead_steps == 8
    assert spec.min_replicas == 1
    assert spec.stale_after_seconds == 180
    assert spec.prometheus == "default"
    assert not spec.shadow


@pytest.mark.parametrize(
    ("metadata", "key", "fragment"),
    [
        ({"capacityPerReplica": "1"}, "query", "exactly one"),
        (with_base(preset="vllm-waiting"), "query", "exactly one"),
        ({"preset": "nope", "capacityPerReplica": "1"}, "preset", "not one of"),
        ({"query": "up"}, "capacityPerReplica", "required"),
        (with_base(capacityPerReplica="0"), "capacityPerReplica", "between"),
        (with_base(capacityPerReplica="abc"), "capacityPerReplica", "not a number"),
        (with_base(capacityPerReplica="nan"), "capacityPerReplica", "between"),
        (with_base(capacityPerReplica="inf"), "capacityPerReplica", "between"),
        (with_base(targetCoverage="1.5"), "targetCoverage", "between 0.5 and 0.999"),
        (with_base(coverageBasis="requests"), "coverageBasis", "not one of: demand, steps"),
        (with_base(leadTime="2 hours"), "leadTime", "duration"),
        (with_base(leadTime="2h"), "leadTime", "between"),
        (with_base(step="5s"), "step", "between"),
        (with_base(historyWindow="10m"), "historyWindow", "between"),
        (with_base(historyWindow="30d", step="10s"), "historyWindow", "at most 200000"),
        (with_base(historyWindow="1h", leadTime="30m"), "historyWindow", "four lead times"),
        (with_base(minReplicas="-1"), "minReplicas", "between"),
        (with_base(minReplicas="1.5"), "minReplicas", "integer"),
        (with_base(minReplicas="5", maxReplicas="2"), "maxReplicas", "below minReplicas"),
        (with_base(model="prophet"), "model", "not one of"),
        (with_base(metricKind="ratio"), "metricKind", "not one of"),
        (with_base(mode="dry"), "mode", "not one of"),
        (with_base(prometheus="http://evil.example:9090"), "prometheus", "endpoint name"),
        (with_base(workloadName="Bad_Name"), "workloadName", "object name"),
        (with_base(metricName="has space"), "metricName", "letters"),
        (with_base(staleAfter="1s"), "staleAfter", "between"),
        (with_base(podsPerNode="0"), "podsPerNode", "between"),
        (with_base(scaleDownPercentPerMinute="0"), "scaleDownPercentPerMinute", "between"),
        (with_base(targetCoverge="0.9"), "targetCoverge", "unknown key"),
        (with_base(query="x" * 5000), "query", "longer than"),
        (with_base(query="up\x00"), "query", "NUL"),
        (
            {"preset": "vllm-waiting", "capacityPerReplica": "1", "presetSelector": 'a="b"}) or vector(1'},
            "presetSelector",
            "label matchers",
        ),
        ({f"k{i}": "v" for i in range(70)}, "scalerMetadata", "at most 64"),
        (with_base(metricKind="utilisation", targetUtilization="0.7"), "replicaSource", "needs them"),
        (with_base(arrivalsQuery="a"), "query", "exactly one of"),
        (with_base(query="", podsQuery="p"), "podsQuery", "name at least one"),
        (with_base(query="", waitingQuery="w", metricKind="load"), "metricKind", "per-kind queries"),
        (with_base(query="", utilizationQuery="u", capacityPerReplica=""), "targetUtilization", "is required"),
        (with_base(targetUtilization="0.7"), "targetUtilization", "no utilisation signal"),
        (with_base(query="", completionsQuery="c", capacityPerReplica=""), "capacityPerReplica", "is required"),
        (with_base(replicaSource="kubernetes"), "workloadName", "is required with replicaSource kubernetes"),
        (with_base(replicaSource="prometheus"), "replicasQuery", "is required with replicaSource prometheus"),
        (with_base(replicasQuery="kube_deployment_status_replicas_ready"), "replicasQuery", "only read"),
        (with_base(replicaSource="hpa"), "replicaSource", "not one of"),
        (with_base(workloadKind="DaemonSet"), "workloadKind", "not one of"),
        (with_base(drainTime="1s"), "drainTime", "between"),
        (with_base(query="", arrivalsQuery="up\x00"), "arrivalsQuery", "NUL"),
    ],
)
def test_bad_metadata_names_the_key(metadata: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(metadata)
    assert caught.value.key == key
    assert fragment in str(caught.value)
    assert key in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("1.5m", 90), ("2h", 7200), ("7d", 604800), ("250ms", 0.25), (" 3m ", 180)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_preset_expands_to_documented_query_and_kind() -> None:
    replicas = {"replicaSource": "kubernetes", "workloadName": "vllm"}
    spec = parse_spec(
        {"preset": "vllm-kv-cache", "presetSelector": 'namespace="llm"', "capacityPerReplica": "0.8", **replicas}
    )
    assert spec.query == (
        'avg(vllm:kv_cache_usage_perc{namespace="llm"} or vllm:gpu_cache_usage_perc{namespace="llm"})'
    )
    assert spec.metric_kind is MetricKind.UTILISATION
    assert [signal.kind.value for signal in spec.signals] == ["utilization", "pods"]
    assert spec.target_utilization == 0.8
    with pytest.raises(SpecError) as raised:
        parse_spec({"preset": "vllm-kv-cache", "capacityPerReplica": "0.8", "metricKind": "load", **replicas})
    assert raised.value.key == "metricKind"


def test_per_kind_queries_make_a_bundle_with_a_replica_source() -> None:
    spec = parse_spec(
        {
            "completionsQuery": "sum(rate(vllm:request_success_total[2m]))",
            "waitingQuery": "sum(vllm:num_requests_waiting)",
            "podsQuery": "count(vllm:num_requests_waiting)",
            "capacityPerReplica": "4",
            "drainTime": "90s",
            "replicaSource": "prometheus",
            "replicasQuery": 'kube_deployment_status_replicas_ready{deployment="vllm"}',
        }
    )
    assert [signal.kind.value for signal in spec.signals] == ["completions", "waiting", "pods"]
    assert spec.query == "sum(rate(vllm:request_success_total[2m]))"  # the primary: completions
    assert spec.metric_kind is MetricKind.LOAD
    assert (spec.drain_time_seconds, spec.replica_source.value) == (90.0, "prometheus")
    assert spec.replicas_query == 'kube_deployment_status_replicas_ready{deployment="vllm"}'
    legacy = parse_spec(BASE)
    assert [(signal.kind.value, signal.query) for signal in legacy.signals] == [("arrivals", BASE["query"])]
    assert legacy.replica_source.value == "none"


def test_utilisation_alone_plans_in_replica_units() -> None:
    spec = parse_spec(
        {"utilizationQuery": "avg(u)", "targetUtilization": "0.75", "replicaSource": "kubernetes", "workloadName": "w"}
    )
    assert spec.metric_kind is MetricKind.UTILISATION
    assert spec.capacity_per_replica == spec.target_utilization == 0.75
    assert spec.workload_kind == "Deployment"


def test_empty_values_take_defaults_and_aliases_work() -> None:
    spec = parse_spec(
        with_base(
            targetCoverage="",
            metricKind="utilization",
            targetUtilization="0.7",
            capacityPerReplica="",
            replicaSource="kubernetes",
            workloadName="vllm",
            mode="shadow",
        )
    )
    assert spec.target_coverage == 0.95
    assert spec.metric_kind is MetricKind.UTILISATION
    assert spec.shadow


def test_identity_is_stable_and_metadata_sensitive() -> None:
    assert metadata_digest({"a": "1", "b": "2"}) == metadata_digest({"b": "2", "a": "1"})
    assert metadata_digest(BASE) != metadata_digest(with_base(leadTime="4m"))
    key = target_key("ns", "so", BASE)
    assert metric_name_for(key, parse_spec(BASE)).startswith("predicted-replicas-")
    assert metric_name_for(key, parse_spec(with_base(metricName="llm"))) == "llm"


def test_every_key_is_documented_in_configuration_md() -> None:
    docs = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
    assert keys_markdown_table() in docs
    assert len(KEYS) == len({key.name for key in KEYS})
