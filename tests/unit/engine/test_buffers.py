"""One node buffer for several triggers of one workload: a table of cases."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from autoscaler.domain.placeholders import PlaceholderGroup
from autoscaler.domain.signals import ReplicaCounts
from autoscaler.domain.snapshot import EngineSnapshot
from autoscaler.domain.types import Decision, TargetKey
from autoscaler.engine.actuation import wanted_buffers
from autoscaler.engine.buffers import TriggerNeed, combined_buffer, trigger_need
from tests.unit.services.fake_engine import key_and_spec, metadata, target_snapshot


def trigger(
    name: str, replicas: int, node_replicas: int, *, max_buffer: int = 8, max_replicas: int = 100
) -> TriggerNeed:
    return TriggerNeed(
        key=TargetKey("llm", name, "0"),
        replicas=replicas,
        node_replicas=node_replicas,
        max_buffer_replicas=max_buffer,
        max_replicas=max_replicas,
    )


@pytest.mark.parametrize(
    ("triggers", "observed_desired", "expected"),
    [
        # One trigger: its own need minus its own plan.
        ([trigger("a", 4, 7)], None, 3),
        # Ours beside ours: the HPA runs 10 (a's plan); b's headroom above its own small
        # plan is already running. The largest buffer (b's 4) kept 4 nodes' worth warm for nothing.
        ([trigger("a", 10, 12), trigger("b", 2, 6)], None, 2),
        # The larger need may come from the trigger with the smaller plan.
        ([trigger("a", 10, 10), trigger("b", 6, 14)], None, 4),
        # Ours beside KEDA's own trigger that asks for more: the HPA runs the 13 observed.
        ([trigger("a", 4, 12)], 13, 0),
        ([trigger("a", 4, 12)], 9, 3),
        # The observed desired count below our plan (the HPA has not followed yet) changes nothing.
        ([trigger("a", 6, 9)], 2, 3),
        # Caps: the smallest maxBufferReplicas, the room under the largest maxReplicas.
        ([trigger("a", 2, 12, max_buffer=3), trigger("b", 2, 4, max_buffer=8)], None, 3),
        ([trigger("a", 9, 14, max_replicas=10), trigger("b", 2, 4, max_replicas=11)], None, 2),
        # Never negative: every trigger's plan covers its need.
        ([trigger("a", 5, 5), trigger("b", 8, 8)], None, 0),
    ],
)
def test_combined_buffer(triggers: list[TriggerNeed], observed_desired: int | None, expected: int) -> None:
    assert combined_buffer(triggers, observed_desired=observed_desired).replicas == expected


def test_the_reason_names_the_need_the_plan_and_the_cap() -> None:
    reason = combined_buffer([trigger("a", 10, 20, max_buffer=4), trigger("b", 12, 13)]).reason
    assert "20 replicas needed at the node lead time (llm/a" in reason
    assert "minus 12 run (llm/b" in reason
    assert "capped at 4 (maxBufferReplicas 4" in reason


def test_no_trigger_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one trigger"):
        combined_buffer([])


def decision(replicas: int, buffer: int, forecast_at_node_lead: float) -> Decision:
    return Decision(
        replicas=replicas,
        reactive_replicas=replicas,
        buffer_replicas=buffer,
        reason="test",
        forecast_at_lead=math.nan,
        forecast_at_node_lead=forecast_at_node_lead,
        quantile_level=0.95,
        predictive=True,
    )


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (decision(4, 3, 70.0), 7),  # plan + buffer
        (decision(4, 4, 120.0), 12),  # maxBufferReplicas cut the buffer at 4: the forecast needs 12
        (decision(4, 0, math.nan), 4),  # reactive (cold start): no forecast, the plan
    ],
)
def test_a_triggers_need_at_the_node_lead_time(plan: Decision, expected: int) -> None:
    key, spec = key_and_spec("llm", "so", metadata(workloadName="chat", capacityPerReplica="10"))
    target = target_snapshot(key, spec, plan=plan, now=0.0)
    assert trigger_need(target, plan).node_replicas == expected


def test_the_actuation_pass_sizes_one_buffer_per_workload_from_its_triggers() -> None:
    """Two triggers of one ScaledObject and the replicas the workload was observed to run."""
    targets = {}
    for name, plan, observed in (
        ("queue", decision(10, 2, 120.0), None),  # needs 12, plans 10
        ("kv-cache", decision(2, 4, 60.0), ReplicaCounts(ready=10, desired=11)),  # needs 6, plans 2
    ):
        key, spec = key_and_spec("llm", name, metadata(workloadName="chat", capacityPerReplica="10"))
        targets[key] = replace(target_snapshot(key, spec, plan=plan, now=0.0), observed_replicas=observed)
    wanted, skipped = wanted_buffers(EngineSnapshot(generated_at=0.0, targets=targets))
    assert not skipped
    [(group, want)] = wanted.items()
    assert group == PlaceholderGroup("llm", "chat")
    assert want.replicas == 1  # 12 needed - 11 desired observed; the largest buffer alone said 4
    assert "another trigger asks for more" in want.reason
