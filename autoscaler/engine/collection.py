"""What the engine reads for one target: every signal query, the age of their data, and
the scale target's replica counts.

A step's queries run concurrently, and the first failed query fails the step (the
engine then holds the last plan). A signal without a finite value is left out of the
step, never read as zero; a step that misses any signal is missing data as a whole,
since a sum without its pod count, or completions without the queue, would read as
lower demand. A replica count that cannot be read only leaves the step without one:
the pipeline plans from the last count observed and says so.

Range reads (warm start, backfill) align every signal on the step grid and keep the
steps where all of them have a value. Replica history comes from the replica query
(replicaSource prometheus) or, for replicaSource kubernetes, which keeps no history,
from the `pods` signal's count where the target has one; otherwise warm-started steps
carry no replica count and the first step's reading is the first.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from autoscaler.domain.signals import ReplicaCounts, ReplicaSource, SignalKind, StepSignals
from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import TargetKey
from autoscaler.engine.sources import MetricSource, ReplicaReader

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StepReading:
    """One step as read: the finite signals, which ones were missing, and how old the data is."""

    signals: StepSignals
    missing: tuple[SignalKind, ...]
    newest_sample_at: float | None
    """When the newest raw sample of the stalest input was taken; None when unknown."""
    replica_error: str | None = None


def signal_queries(spec: ScalerSpec) -> tuple[str, ...]:
    return tuple(signal.query for signal in spec.signals)


async def read_step(
    source: MetricSource, spec: ScalerSpec, key: TargetKey, *, replicas: ReplicaReader | None, at: float
) -> StepReading:
    queries = signal_queries(spec)
    answers, newest, (counts, replica_error) = await _all_or_first_error(
        _gather([source.instant(query, at=at) for query in queries]),
        source.newest_sample_at(queries, at=at),
        _replicas_or_error(source, spec, key, replicas=replicas, at=at),
    )
    values: dict[SignalKind, float] = {}
    missing: list[SignalKind] = []
    for signal, sample in zip(spec.signals, answers, strict=True):
        if sample is None or not math.isfinite(sample.value):
            missing.append(signal.kind)
        else:
            values[signal.kind] = sample.value
    return StepReading(
        signals=StepSignals(timestamp=at, values=values, replicas=counts),
        missing=tuple(missing),
        newest_sample_at=newest,
        replica_error=replica_error,
    )


async def read_range(source: MetricSource, spec: ScalerSpec, *, start: float, end: float) -> list[StepSignals]:
    """The complete steps on the grid [start, end] (every signal finite, as a live step
    must be to be observed), oldest first, with replica counts where known."""
    replica_query = spec.replicas_query if spec.replica_source is ReplicaSource.PROMETHEUS else None
    queries = [*signal_queries(spec), *([] if replica_query is None else [replica_query])]
    ranges = await _gather(
        [source.range(query, start=start, end=end, step_seconds=spec.step_seconds) for query in queries]
    )
    by_step: dict[float, dict[SignalKind, float]] = {}
    for signal, points in zip(spec.signals, ranges, strict=False):
        for timestamp, value in points:
            if math.isfinite(value):  # as a live step: a NaN is a missing value, never a sample
                by_step.setdefault(timestamp, {})[signal.kind] = value
    ready = dict(ranges[-1]) if replica_query is not None else {}
    if spec.replica_source is ReplicaSource.KUBERNETES:
        # The API keeps no history: the pods the sums covered stand for the ready replicas.
        ready = {when: values[SignalKind.PODS] for when, values in by_step.items() if SignalKind.PODS in values}
    return [
        StepSignals(timestamp=timestamp, values=values, replicas=_ready_count(ready.get(timestamp, math.nan)))
        for timestamp, values in sorted(by_step.items())
        if len(values) == len(spec.signals)
    ]


@dataclass(frozen=True, slots=True)
class WarmStart:
    """The history window, the age of its newest data, and the replica counts now."""

    steps: list[StepSignals]
    newest_sample_at: float | None
    replicas: ReplicaCounts | None


async def read_warm_start(
    source: MetricSource,
    spec: ScalerSpec,
    key: TargetKey,
    *,
    replicas: ReplicaReader | None,
    start: float,
    end: float,
    at: float,
) -> WarmStart:
    """Everything a warm start reads, asked at once; the first failure fails it."""
    steps, newest, counts = await _all_or_first_error(
        read_range(source, spec, start=start, end=end),
        source.newest_sample_at(signal_queries(spec), at=at),
        read_replicas(source, spec, key, replicas=replicas, at=at),
    )
    return WarmStart(steps=steps, newest_sample_at=newest, replicas=counts)


async def read_replicas(
    source: MetricSource, spec: ScalerSpec, key: TargetKey, *, replicas: ReplicaReader | None, at: float
) -> ReplicaCounts | None:
    """The scale target's counts now from its replica source; None when it has none or no data."""
    if spec.replica_source is ReplicaSource.KUBERNETES:
        if replicas is None or spec.workload_name is None:  # ensure_target refuses such a target
            raise LookupError("replicaSource kubernetes without a Kubernetes API client or workloadName")
        return await replicas.read(namespace=key.namespace, kind=spec.workload_kind, name=spec.workload_name)
    if spec.replica_source is ReplicaSource.PROMETHEUS and spec.replicas_query is not None:
        sample = await source.instant(spec.replicas_query, at=at)
        return None if sample is None else _ready_count(sample.value)
    return None


async def _replicas_or_error(
    source: MetricSource, spec: ScalerSpec, key: TargetKey, *, replicas: ReplicaReader | None, at: float
) -> tuple[ReplicaCounts | None, str | None]:
    try:
        return await read_replicas(source, spec, key, replicas=replicas, at=at), None
    except Exception as error:  # any adapter's error: the step goes on without a count
        return None, f"replicas: {type(error).__name__}: {error}"


def _ready_count(value: float) -> ReplicaCounts | None:
    """A count from a query (kube-state-metrics): ready only, the desired count is not read."""
    if not math.isfinite(value) or value < 0:
        return None
    return ReplicaCounts(ready=round(value))


async def _gather(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    results: list[T] = list(await _all_or_first_error(*calls))
    return results


async def _all_or_first_error(*calls: Coroutine[Any, Any, Any]) -> tuple[Any, ...]:
    """Run concurrently; the first failure cancels the rest and is raised itself, not as a group."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return tuple(task.result() for task in tasks)
