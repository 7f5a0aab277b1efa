"""Replay a trace through policies on the cluster model and total their outcomes.

Row t of the trace is the demand of the step starting at its timestamp. For each row
a policy first decides (knowing rows < t only), the cluster applies the decision and
serves row t's demand, and only then does the policy observe row t.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from autoscaler.domain.spec import DEFAULT_COVERAGE_BASIS, ScalerSpec, parse_spec
from autoscaler.planner.pipeline import TargetPipeline
from autoscaler.sim.cluster import Cluster, ClusterConfig, ClusterTotals
from autoscaler.sim.policies import (
    HoltWintersPolicy,
    OraclePolicy,
    OursPolicy,
    Policy,
    ReactivePolicy,
)
from autoscaler.sim.trace import Trace

POLICY_NAMES = ("ours", "reactive", "holt-winters", "oracle")
MAX_REPLICAS = 10_000
NEAR_ZERO_UNSERVED_SHARE = 1e-3
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """The command's flags; everything else takes the daemon's defaults."""

    step_seconds: float
    capacity_per_replica: float
    pod_startup_seconds: float
    node_startup_seconds: float
    pods_per_node: int
    target_coverage: float = 0.95
    model: str = "auto"
    coverage_basis: str = DEFAULT_COVERAGE_BASIS
    daily_rebuild: bool = False
    """Ours also makes the daemon's daily rebuild (a replay of its window a day per target)."""

    def spec(self) -> ScalerSpec:
        """The ScalerSpec the daemon would build from equivalent scalerMetadata (validated)."""
        return parse_spec(self.metadata())

    def metadata(self) -> dict[str, str]:
        """The scalerMetadata equivalent to these flags, for a target whose query is the trace."""
        return {
            "query": "trace",
            "capacityPerReplica": repr(self.capacity_per_replica),
            "targetCoverage": repr(self.target_coverage),
            "coverageBasis": self.coverage_basis,
            "leadTime": f"{self.pod_startup_seconds!r}s",
            "nodeLeadTime": f"{self.node_startup_seconds!r}s",
            "podsPerNode": str(self.pods_per_node),
            "step": f"{self.step_seconds!r}s",
            "model": self.model,
            "maxReplicas": str(MAX_REPLICAS),
        }

    def cluster(self) -> ClusterConfig:
        return ClusterConfig(
            capacity_per_replica=self.capacity_per_replica,
            pod_startup_seconds=self.pod_startup_seconds,
            node_startup_seconds=self.node_startup_seconds,
            pods_per_node=self.pods_per_node,
        )


@dataclass(frozen=True, slots=True)
class StepRecord:
    timestamp: float
    demand: float
    forecast: float
    desired_replicas: int
    buffer_replicas: int
    ready_replicas: int
    nodes: int
    unserved: float
    reason: str


@dataclass(frozen=True, slots=True)
class PolicyRun:
    name: str
    totals: ClusterTotals
    records: tuple[StepRecord, ...]
    achieved_coverage: float | None = None  # share of plans covering demand at the lead time, ours only


def make_policy(name: str, config: BacktestConfig, trace: Trace) -> Policy:
    spec = config.spec()
    if name == "ours":
        return OursPolicy(TargetPipeline(spec), daily_rebuild=config.daily_rebuild)
    if name == "reactive":
        return ReactivePolicy(spec)
    if name == "holt-winters":
        return HoltWintersPolicy(spec)
    if name == "oracle":
        return OraclePolicy(spec, trace.values)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")


def initial_replicas(config: BacktestConfig, trace: Trace) -> int:
    """Every policy starts from the replicas the first row needs, so no one starts short."""
    spec = config.spec()
    return max(spec.min_replicas, math.ceil(float(trace.values[0]) / config.capacity_per_replica - 1e-9))


def run_policy(
    policy: Policy,
    trace: Trace,
    config: BacktestConfig,
    *,
    last_row: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> PolicyRun:
    """Replay rows [0, last_row) through one policy on a fresh cluster."""
    cluster = Cluster(config.cluster(), initial_replicas(config, trace))
    total = len(trace)
    end = total if last_row is None else min(total, last_row)
    records: list[StepRecord] = []
    progress_every = max(1, total // 200)
    for row in range(end):
        now = float(trace.timestamps[row])
        demand = float(trace.values[row])
        decision = policy.decide(now, cluster.replicas)
        outcome = cluster.step(
            now=now, demand=demand, desired_replicas=decision.replicas, buffer_replicas=decision.buffer_replicas
        )
        policy.observe(now, demand)
        records.append(
            StepRecord(
                timestamp=now,
                demand=demand,
                forecast=decision.forecast,
                desired_replicas=decision.replicas,
                buffer_replicas=decision.buffer_replicas,
                ready_replicas=outcome.ready_replicas,
                nodes=outcome.nodes,
                unserved=outcome.unserved,
                reason=decision.reason,
            )
        )
        if on_progress is not None and (row + 1) % progress_every == 0:
            on_progress(row + 1, end)
    coverage = (
        planned_coverage(
            records,
            lead_steps=config.spec().lead_steps,
            capacity_per_replica=config.capacity_per_replica,
            basis=config.coverage_basis,
        )
        if isinstance(policy, OursPolicy)
        else None
    )
    return PolicyRun(name=policy.name, totals=cluster.totals, records=tuple(records), achieved_coverage=coverage)


def planned_coverage(
    records: list[StepRecord], *, lead_steps: int, capacity_per_replica: float, basis: str
) -> float | None:
    """How much of the demand at row t + lead the predictive plans made at row t covered.

    The calibrator's own check, over the whole run instead of its rolling window: the
    share of those plans that covered their step (`steps`), or the share of those steps'
    demand within the plans' capacity (`demand`).
    """
    covered = scored = 0.0
    for made, arrived in zip(records, records[lead_steps:], strict=False):
        if not math.isfinite(made.forecast):
            continue
        cover = made.desired_replicas * capacity_per_replica
        if basis == "steps":
            scored += 1
            covered += arrived.demand <= cover + 1e-9 * max(1.0, arrived.demand)
        else:
            scored += arrived.demand
            covered += min(arrived.demand, cover)
    return covered / scored if scored else None


def run_named(name: str, trace: Trace, config: BacktestConfig) -> PolicyRun:
    """One policy by name; a module-level function so a process pool can run it."""
    return run_policy(make_policy(name, config, trace), trace, config)


def comparison(ours: PolicyRun, baseline: PolicyRun) -> str:
    """One line comparing ours with a baseline: ratios, or both figures where a ratio misleads.

    A baseline that leaves almost nothing unserved (the oracle) would turn a small
    difference into a ratio in the thousands, so below `NEAR_ZERO_UNSERVED_SHARE` of its
    demand the line shows both shares instead.
    """
    ours_totals, base_totals = ours.totals, baseline.totals
    if base_totals.unserved_share >= NEAR_ZERO_UNSERVED_SHARE:
        unserved = f"{ours_totals.unserved / base_totals.unserved:.2f}x"
    else:
        unserved = (
            f"{100 * ours_totals.unserved_share:.3f}% vs {100 * base_totals.unserved_share:.3f}% "
            f"of demand (no ratio: {baseline.name} leaves under {100 * NEAR_ZERO_UNSERVED_SHARE:g}%)"
        )
    if base_totals.node_steps > 0:
        nodes = f"{ours_totals.node_steps / base_totals.node_steps:.2f}x"
    else:
        nodes = f"{ours_totals.node_steps} vs 0"
    return f"ours vs {baseline.name}: unserved {unserved}, node-steps {nodes}"


def summary_table(runs: list[PolicyRun]) -> str:
    """A fixed-width table of every run's totals, in the order given."""
    header = f"{'policy':<14}{'unserved %':>12}{'steps short %':>15}{'replica-steps':>15}{'node-steps':>12}"
    lines = [header, "-" * len(header)]
    for run in runs:
        totals = run.totals
        lines.append(
            f"{run.name:<14}{100 * totals.unserved_share:>12.3f}{100 * totals.short_share:>15.2f}"
            f"{totals.replica_steps:>15d}{totals.node_steps:>12d}"
        )
    return "\n".join(lines)
