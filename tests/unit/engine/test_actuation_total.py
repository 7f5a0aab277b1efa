"""The daemon-wide buffer total (limits.maxBufferReplicasTotal) as the actuation pass applies it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from autoscaler.domain.placeholders import PlaceholderGroup
from autoscaler.domain.snapshot import EngineSnapshot
from autoscaler.engine.actuation import wanted_buffers, within_total
from tests.unit.services.fake_engine import decision, key_and_spec, metadata, target_snapshot

NOW = 1_700_000_000.0


def snapshot(*targets: tuple[str, str, int, str]) -> EngineSnapshot:
    """(namespace, workload, planned buffer, mode) per target."""
    published = {}
    for index, (namespace, workload, buffer, mode) in enumerate(targets):
        key, spec = key_and_spec(
            namespace, f"so-{index}", metadata(workloadName=workload, maxBufferReplicas="16", mode=mode)
        )
        plan = replace(decision(), buffer_replicas=buffer)
        published[key] = target_snapshot(key, spec, plan=plan, now=NOW)
    return EngineSnapshot(generated_at=NOW, targets=published)


def replicas(wanted: Mapping[PlaceholderGroup, Any]) -> list[tuple[str, int]]:
    return sorted((group.workload_name, want.replicas) for group, want in wanted.items())


def test_buffers_above_the_total_are_cut_to_fair_shares_with_the_reason() -> None:
    wanted, _skipped = wanted_buffers(
        snapshot(("llm", "a", 2, "active"), ("llm", "b", 12, "active"), ("web", "c", 12, "active"))
    )
    capped = within_total(wanted, 12)
    assert replicas(capped) == [("a", 2), ("b", 5), ("c", 5)]
    cut = next(want for group, want in capped.items() if group.workload_name == "b")
    assert "cut from 12 to a fair share of limits.maxBufferReplicasTotal 12" in cut.reason
    kept = next(want for group, want in capped.items() if group.workload_name == "a")
    assert "cut" not in kept.reason


def test_shadow_only_groups_write_nothing_and_take_no_share() -> None:
    wanted, _skipped = wanted_buffers(snapshot(("llm", "a", 10, "active"), ("llm", "b", 10, "shadow")))
    assert replicas(within_total(wanted, 10)) == [("a", 10), ("b", 10)]


def test_within_the_total_nothing_changes() -> None:
    wanted, _skipped = wanted_buffers(snapshot(("llm", "a", 3, "active"), ("web", "c", 4, "active")))
    assert within_total(wanted, 7) == wanted
