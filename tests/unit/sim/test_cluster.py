from __future__ import annotations

import pytest

from autoscaler.sim.cluster import Cluster, ClusterConfig

CONFIG = ClusterConfig(
    capacity_per_replica=10.0, pod_startup_seconds=180.0, node_startup_seconds=300.0, pods_per_node=4
)


def ready_over_time(cluster: Cluster, plan: dict[float, tuple[int, int]], times: list[float]) -> list[int]:
    """Step through `times`; `plan` maps a time to (desired, buffer), held until changed."""
    desired, buffer = cluster.replicas, 0
    ready = []
    for now in times:
        desired, buffer = plan.get(now, (desired, buffer))
        ready.append(cluster.step(now=now, demand=0.0, desired_replicas=desired, buffer_replicas=buffer).ready_replicas)
    return ready


MINUTES = [60.0 * minute for minute in range(15)]


def test_pods_on_a_warm_node_are_ready_after_pod_startup() -> None:
    cluster = Cluster(CONFIG, initial_replicas=1)
    ready = ready_over_time(cluster, {0.0: (3, 0)}, MINUTES[:5])
    assert ready == [1, 1, 1, 3, 3]
    assert cluster.nodes == 1


def test_a_pod_that_needs_a_new_node_waits_for_node_and_pod_startup() -> None:
    cluster = Cluster(CONFIG, initial_replicas=4)
    ready = ready_over_time(cluster, {0.0: (5, 0)}, MINUTES[:10])
    assert ready == [4] * 8 + [5, 5]  # 300 s node + 180 s pod
    assert cluster.nodes == 2


@pytest.mark.parametrize(("buffer", "ready_at_minute"), [(4, 8), (0, 13)])
def test_a_node_kept_warm_by_placeholders_counts_as_room(buffer: int, ready_at_minute: int) -> None:
    cluster = Cluster(CONFIG, initial_replicas=4)
    ready = ready_over_time(cluster, {0.0: (4, buffer), 300.0: (8, 0)}, MINUTES)
    assert ready.index(8) == ready_at_minute


def test_scale_down_frees_pods_at_once_and_empty_nodes_after_the_delay() -> None:
    cluster = Cluster(CONFIG, initial_replicas=8)
    nodes = []
    for now in MINUTES[:12]:
        outcome = cluster.step(now=now, demand=0.0, desired_replicas=2, buffer_replicas=0)
        assert outcome.replicas == outcome.ready_replicas == 2
        nodes.append(outcome.nodes)
    assert nodes == [2] * 10 + [1, 1]


def test_scale_down_removes_starting_pods_first() -> None:
    cluster = Cluster(CONFIG, initial_replicas=2)
    ready = ready_over_time(cluster, {0.0: (4, 0), 60.0: (3, 0)}, MINUTES[:5])
    assert ready == [2, 2, 2, 3, 3]


def test_steps_longer_than_pod_startup_serve_from_the_next_step() -> None:
    cluster = Cluster(CONFIG, initial_replicas=1)
    ready = ready_over_time(cluster, {0.0: (2, 0)}, [0.0, 600.0])
    assert ready == [1, 2]


def test_totals_count_unserved_demand_short_steps_and_costs() -> None:
    cluster = Cluster(CONFIG, initial_replicas=2)
    for now, demand in [(0.0, 25.0), (60.0, 15.0), (120.0, 20.0)]:
        cluster.step(now=now, demand=demand, desired_replicas=2, buffer_replicas=2)
    totals = cluster.totals
    assert totals.steps == 3
    assert totals.unserved == pytest.approx(5.0)
    assert totals.unserved_share == pytest.approx(5.0 / 60.0)
    assert totals.steps_short == 1
    assert totals.short_share == pytest.approx(1 / 3)
    assert totals.replica_steps == 6
    assert totals.node_steps == 3


@pytest.mark.parametrize(
    "overrides",
    [{"capacity_per_replica": 0.0}, {"pods_per_node": 0}, {"pod_startup_seconds": -1.0}],
)
def test_config_rejects_impossible_values(overrides: dict[str, float]) -> None:
    values = {"capacity_per_replica": 1.0, "pod_startup_seconds": 1.0, "node_startup_seconds": 1.0, "pods_per_node": 1}
    values.update(overrides)
    with pytest.raises(ValueError, match="must"):
        ClusterConfig(**values)  # type: ignore[arg-type]
