"""Closed-loop backtest: replicas serve a trace's arrivals; policies see only what a scrape shows.

Row t of the trace is the arrival rate of the step starting at its timestamp. For each
row a policy decides from the observations of earlier steps (the last one `scrape
delay` old) and the replicas observed; the cluster model applies the decision; the
serving model (autoscaler.sim.serving) serves row t with the replicas ready; the
scrape of that step then joins the observations. So a policy whose replicas fall short
sees completions capped, a queue, or a utilisation pinned at 100 %, not the demand.

Per signal bundle it compares ours (the daemon's `TargetPipeline`) with KEDA/HPA on
the same series, and both with ours on arrivals and a perfect-foresight oracle.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from autoscaler.domain.signals import ReplicaCounts, SignalKind, StepSignals
from autoscaler.domain.spec import SIGNAL_KEYS, ScalerSpec, parse_spec
from autoscaler.planner.pipeline import TargetPipeline
from autoscaler.planner.reactive import reactive_on_signals
from autoscaler.sim.backtest import BacktestConfig, initial_replicas
from autoscaler.sim.cluster import Cluster
from autoscaler.sim.policies import DailyRebuild, HpaStabilisation, OraclePolicy, PolicyDecision
from autoscaler.sim.serving import ServingConfig, ServingModel, ServingTotals
from autoscaler.sim.trace import Trace

BUNDLES: Mapping[str, tuple[SignalKind, ...]] = {
    "arrivals": (SignalKind.ARRIVALS,),
    "completions+waiting": (SignalKind.COMPLETIONS, SignalKind.WAITING),
    "utilisation": (SignalKind.UTILIZATION,),
    "waiting": (SignalKind.WAITING,),
}
OURS, KEDA, OURS_ON_ARRIVALS, ORACLE = "ours", "keda/hpa", "ours on arrivals", "oracle"
DEFAULT_DRAIN_TIME_SECONDS = 120.0
"""The daemon's drainTime default; it also sets the queue trigger's per-replica target."""


@dataclass(frozen=True, slots=True)
class ClosedLoopConfig:
    """The open-loop flags plus the serving model and the planner's closed-loop keys."""

    backtest: BacktestConfig
    patience_seconds: float = 120.0
    scrape_delay_seconds: float = 0.0
    """Extra age of the newest scrape, on top of the step a decision always lags."""
    target_utilization: float = 0.8
    drain_time_seconds: float = DEFAULT_DRAIN_TIME_SECONDS

    def spec(self, bundle: str) -> ScalerSpec:
        """The ScalerSpec of a target that collects `bundle` (validated like any metadata)."""
        metadata = {key: value for key, value in self.backtest.metadata().items() if key != "query"}
        for kind in BUNDLES[bundle]:
            metadata[SIGNAL_KEYS[kind]] = f"simulated {kind.value}"
        if SignalKind.UTILIZATION in BUNDLES[bundle]:
            metadata["targetUtilization"] = repr(self.target_utilization)
            # The ready replicas come with each scrape, as a kube-state-metrics query's would.
            metadata["replicaSource"] = "prometheus"
            metadata["replicasQuery"] = "simulated ready replicas"
        metadata["drainTime"] = f"{self.drain_time_seconds!r}s"
        return parse_spec(metadata)

    def serving(self) -> ServingConfig:
        return ServingConfig(
            step_seconds=self.backtest.step_seconds,
            capacity_per_replica=self.backtest.capacity_per_replica,
            patience_seconds=self.patience_seconds,
        )

    @property
    def scrape_delay_steps(self) -> int:
        return math.ceil(self.scrape_delay_seconds / self.backtest.step_seconds - 1e-9)


class ClosedLoopPolicy(Protocol):
    name: str

    def decide(self, now: float, replicas: ReplicaCounts) -> PolicyDecision: ...

    def observe(self, signals: StepSignals) -> None: ...


class OursClosedLoop:
    """The daemon's pipeline; refits run inline, as if the worker were instant."""

    name = OURS

    def __init__(self, spec: ScalerSpec, *, daily_rebuild: bool = False) -> None:
        self.pipeline = TargetPipeline(spec)
        self.daily_rebuild = DailyRebuild(spec) if daily_rebuild else None

    def decide(self, now: float, replicas: ReplicaCounts) -> PolicyDecision:
        if self.daily_rebuild is not None:
            self.pipeline = self.daily_rebuild.rebuilt(self.pipeline)
        self.pipeline.refit_if_due()
        decision = self.pipeline.decide(now, observed_replicas=replicas)
        return PolicyDecision(
            replicas=decision.replicas,
            buffer_replicas=decision.buffer_replicas,
            forecast=decision.forecast_at_lead,
            reason=decision.reason,
        )

    def observe(self, signals: StepSignals) -> None:
        if self.daily_rebuild is not None:
            self.daily_rebuild.remember(signals)
        self.pipeline.observe_step(signals)


class KedaClosedLoop:
    """KEDA/HPA with one trigger per series of the bundle: the largest answer, 5-minute window."""

    name = KEDA

    def __init__(self, spec: ScalerSpec) -> None:
        self.spec = spec
        self._latest: Mapping[SignalKind, float] = {}
        self._stabilised = HpaStabilisation()

    def decide(self, now: float, replicas: ReplicaCounts) -> PolicyDecision:
        current = replicas.ready if replicas.desired is None else replicas.desired
        raw, reason = reactive_on_signals(
            self.spec, values=self._latest, ready=replicas.ready, current_replicas=current
        )
        stabilised = self._stabilised(now=now, raw=raw, current_replicas=current)
        return PolicyDecision(replicas=stabilised, buffer_replicas=0, forecast=math.nan, reason=reason)

    def observe(self, signals: StepSignals) -> None:
        self._latest = signals.values


class OracleClosedLoop:
    """Perfect foresight of the arrivals, whatever is observed.

    With a targetUtilization it provisions for the arrivals at that utilisation: the
    headroom the user asked for is need, not waste, when ours is measured against it.
    """

    name = ORACLE

    def __init__(self, spec: ScalerSpec, trace: Trace) -> None:
        self._oracle = OraclePolicy(spec, trace.values / (spec.target_utilization or 1.0))

    def decide(self, now: float, replicas: ReplicaCounts) -> PolicyDecision:
        current = replicas.ready if replicas.desired is None else replicas.desired
        return self._oracle.decide(now, current)

    def observe(self, signals: StepSignals) -> None:
        self._oracle.observe(signals.timestamp, math.nan)


@dataclass(frozen=True, slots=True)
class ClosedLoopRun:
    name: str
    bundle: str
    serving: ServingTotals
    replica_steps: int
    node_steps: int


def run_closed_loop(
    policy: ClosedLoopPolicy, trace: Trace, config: ClosedLoopConfig, *, bundle: str, name: str | None = None
) -> ClosedLoopRun:
    """Serve every row of `trace` with the replicas `policy` asks for, feeding it the scrapes of `bundle`."""
    kinds = BUNDLES[bundle]
    cluster = Cluster(config.backtest.cluster(), initial_replicas(config.backtest, trace))
    serving = ServingModel(config.serving())
    scrapes: deque[StepSignals] = deque()
    ready = cluster.replicas
    for row in range(len(trace)):
        now = float(trace.timestamps[row])
        arrival_rate = float(trace.values[row])
        decision = policy.decide(now, ReplicaCounts(ready=ready, desired=cluster.replicas))
        outcome = cluster.step(
            now=now,
            demand=arrival_rate,
            desired_replicas=decision.replicas,
            buffer_replicas=decision.buffer_replicas,
        )
        ready = outcome.ready_replicas
        served = serving.step(arrival_rate=arrival_rate, ready_replicas=ready)
        observed = {kind: served.observed[kind] for kind in kinds}
        scrapes.append(StepSignals(timestamp=now, values=observed, replicas=ReplicaCounts(ready, cluster.replicas)))
        while len(scrapes) > config.scrape_delay_steps:
            policy.observe(scrapes.popleft())
    return ClosedLoopRun(
        name=name or policy.name,
        bundle=bundle,
        serving=serving.totals,
        replica_steps=cluster.totals.replica_steps,
        node_steps=cluster.totals.node_steps,
    )


def make_closed_loop_policy(name: str, bundle: str, trace: Trace, config: ClosedLoopConfig) -> ClosedLoopPolicy:
    spec = config.spec(bundle)
    if name == OURS:
        return OursClosedLoop(spec, daily_rebuild=config.backtest.daily_rebuild)
    if name == KEDA:
        return KedaClosedLoop(spec)
    if name == ORACLE:
        return OracleClosedLoop(spec, trace)
    raise ValueError(f"unknown closed-loop policy {name!r}")


def run_named_closed_loop(name: str, bundle: str, trace: Trace, config: ClosedLoopConfig) -> ClosedLoopRun:
    """One policy on one bundle; a module-level function so a process pool can run it."""
    return run_closed_loop(make_closed_loop_policy(name, bundle, trace, config), trace, config, bundle=bundle)


def closed_loop_jobs(bundles: tuple[str, ...]) -> list[tuple[str, str]]:
    """(policy, bundle) pairs: ours and KEDA/HPA per bundle, ours on arrivals once, and the
    oracle once, or per bundle with a target utilisation of its own."""
    jobs = [(OURS, "arrivals"), (ORACLE, "arrivals")]
    for bundle in bundles:
        if bundle != "arrivals":
            jobs.append((OURS, bundle))
            if SignalKind.UTILIZATION in BUNDLES[bundle]:
                jobs.append((ORACLE, bundle))
        jobs.append((KEDA, bundle))
    return jobs


def bundle_rows(runs: list[ClosedLoopRun], bundle: str) -> list[ClosedLoopRun]:
    """The four rows of a bundle's table: ours, KEDA/HPA, ours on arrivals, the oracle."""
    by_key = {(run.name, run.bundle): run for run in runs}
    return [
        by_key[(OURS, bundle)],
        by_key[(KEDA, bundle)],
        replace(by_key[(OURS, "arrivals")], name=OURS_ON_ARRIVALS, bundle=bundle),
        by_key.get((ORACLE, bundle)) or replace(by_key[(ORACLE, "arrivals")], bundle=bundle),
    ]


def closed_loop_table(runs: list[ClosedLoopRun], bundles: tuple[str, ...]) -> str:
    """A fixed-width table: per bundle, delayed and lost demand, backlog steps, replica- and node-steps."""
    header = (
        f"{'bundle':<21}{'policy':<18}{'delayed %':>10}{'lost %':>9}{'backlog steps %':>16}"
        f"{'replica-steps':>15}{'node-steps':>12}{'÷ oracle':>10}"
    )
    lines = [header, "-" * len(header)]
    for bundle in bundles:
        rows = bundle_rows(runs, bundle)
        oracle_nodes = rows[-1].node_steps
        for run in rows:
            totals = run.serving
            backlog = totals.steps_with_backlog / totals.steps if totals.steps else 0.0
            ratio = f"{run.node_steps / oracle_nodes:.2f}x" if oracle_nodes else "n/a"
            lines.append(
                f"{bundle:<21}{run.name:<18}{100 * totals.delayed_share:>10.3f}{100 * totals.lost_share:>9.3f}"
                f"{100 * backlog:>16.2f}{run.replica_steps:>15d}{run.node_steps:>12d}{ratio:>10}"
            )
    return "\n".join(lines)
