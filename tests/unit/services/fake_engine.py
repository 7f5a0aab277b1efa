"""A small engine at the `EngineView` seam that publishes hand-built snapshots.

Used by the gRPC service's unit tests, its KEDA-client integration tests and its
benchmark; the real engine is tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from autoscaler.domain.snapshot import EngineSnapshot, TargetSnapshot, TargetStatus
from autoscaler.domain.spec import ScalerSpec, metric_name_for, parse_spec, target_key
from autoscaler.domain.types import Decision, TargetKey, as_float_array
from autoscaler.engine.api import UnknownEndpointError

BASE_METADATA: Mapping[str, str] = MappingProxyType(
    {"query": "sum(rate(vllm:request_success_total[1m]))", "capacityPerReplica": "10"}
)


def metadata(**changes: str) -> dict[str, str]:
    return {**BASE_METADATA, **changes}


def key_and_spec(namespace: str, name: str, raw: Mapping[str, str]) -> tuple[TargetKey, ScalerSpec]:
    return target_key(namespace, name, raw), parse_spec(raw)


def decision(*, replicas: int = 3, reactive: int = 2, forecast_at_lead: float = 25.0) -> Decision:
    return Decision(
        replicas=replicas,
        reactive_replicas=reactive,
        buffer_replicas=0,
        reason="test",
        forecast_at_lead=forecast_at_lead,
        forecast_at_node_lead=forecast_at_lead,
        quantile_level=0.95,
        predictive=True,
    )


def target_snapshot(
    key: TargetKey,
    spec: ScalerSpec,
    *,
    status: TargetStatus = TargetStatus.READY,
    plan: Decision | None = None,
    history: tuple[float, ...] = (12.0, 14.0, 15.0),
    now: float | None = None,
    sample_age: float | None = 5.0,
    last_error: str | None = None,
    without_decision: bool = False,
) -> TargetSnapshot:
    """A snapshot as the engine would publish it; READY with a 3-replica plan by default."""
    now = time.time() if now is None else now
    if plan is None and status is TargetStatus.READY and not without_decision:
        plan = decision()
    step = spec.step_seconds
    return TargetSnapshot(
        key=key,
        spec=spec,
        metric_name=metric_name_for(key, spec),
        status=status,
        updated_at=now,
        last_sample_at=None if sample_age is None else now - sample_age,
        decision=plan,
        decided_at=None if plan is None else now,
        forecast=None,
        forecast_start=None,
        history_timestamps=as_float_array([now - step * (len(history) - i) for i in range(len(history))]),
        history_values=as_float_array(history),
        chosen_model="naive" if plan is not None else None,
        model_scores=(),
        seasonal_periods=(),
        target_coverage=spec.target_coverage,
        achieved_coverage=None,
        forecast_error_mase=None,
        last_error=last_error,
    )


class FakeEngine:
    """Implements `EngineView`: registration publishes a WARMING snapshot; tests publish the rest."""

    def __init__(self, *, endpoints: tuple[str, ...] = ("default",)) -> None:
        self.endpoints = endpoints
        self.registrations: list[TargetKey] = []
        self.max_targets: int | None = None
        self._snapshot = EngineSnapshot(generated_at=time.time(), generation=0)
        self._published = asyncio.Event()

    # --- EngineView -------------------------------------------------------------------

    def snapshot(self) -> EngineSnapshot:
        return self._snapshot

    def ensure_target(self, key: TargetKey, spec: ScalerSpec) -> None:
        if spec.prometheus not in self.endpoints:
            raise UnknownEndpointError(spec.prometheus, sorted(self.endpoints))
        self.registrations.append(key)
        if key in self._snapshot.targets:
            return
        if self.max_targets is not None and len(self._snapshot.targets) >= self.max_targets:
            raise OverflowError(f"the daemon already tracks {self.max_targets} targets")
        self.publish(target_snapshot(key, spec, status=TargetStatus.WARMING, sample_age=None))

    async def wait_for_target(self, key: TargetKey, timeout: float) -> TargetSnapshot | None:
        deadline = time.monotonic() + timeout
        while True:
            current = self._snapshot.get(key)
            if current is not None and current.status is not TargetStatus.WARMING:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return current
            await self.wait_next(self._snapshot.generation, remaining)

    async def wait_next(self, generation: int, timeout: float) -> EngineSnapshot:
        if self._snapshot.generation > generation:
            return self._snapshot
        published = self._published
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(published.wait(), timeout)
        return self._snapshot

    # --- test controls ----------------------------------------------------------------

    def publish(self, *snapshots: TargetSnapshot) -> None:
        """Swap in a new generation holding these target snapshots, as the engine does."""
        targets = dict(self._snapshot.targets)
        targets.update({snapshot.key: snapshot for snapshot in snapshots})
        self._replace(targets)

    def drop(self, key: TargetKey) -> None:
        targets = dict(self._snapshot.targets)
        targets.pop(key, None)
        self._replace(targets)

    def _replace(self, targets: dict[TargetKey, TargetSnapshot]) -> None:
        self._snapshot = replace(
            self._snapshot,
            generated_at=time.time(),
            generation=self._snapshot.generation + 1,
            targets=MappingProxyType(targets),
        )
        published, self._published = self._published, asyncio.Event()
        published.set()


def ready_targets(
    engine: FakeEngine, count: int, *, namespace: str = "bench", history_points: int = 60
) -> list[tuple[str, dict[str, str]]]:
    """Publish `count` READY targets at once; return each one's (name, metadata)."""
    refs: list[tuple[str, dict[str, str]]] = []
    snapshots: list[TargetSnapshot] = []
    for index in range(count):
        name, raw = f"model-{index}", metadata(capacityPerReplica=str(5 + index % 40))
        key, spec = key_and_spec(namespace, name, raw)
        plan = decision(replicas=1 + index % 17, reactive=1 + index % 11)
        snapshots.append(target_snapshot(key, spec, plan=plan, history=tuple(np.linspace(1.0, 50.0, history_points))))
        refs.append((name, raw))
    engine.publish(*snapshots)
    return refs
