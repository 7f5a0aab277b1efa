"""Immutable views the engine publishes and every request handler reads.

Handlers (gRPC, HTTP, /metrics) never compute: they look a target up in the latest
`EngineSnapshot`, which the engine swaps atomically after each planning pass.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from autoscaler.domain.signals import ReplicaCounts, SignalKind
from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import Decision, FloatArray, Forecast, ModelScore, TargetKey


class TargetStatus(enum.Enum):
    WARMING = "warming"  # registered, first collection/plan not done yet
    READY = "ready"  # fresh data and a current decision
    STALE = "stale"  # no fresh data within staleAfter: handlers answer UNAVAILABLE
    ERROR = "error"  # collection failing and the last safe plan has expired


@dataclass(frozen=True, slots=True)
class SignalHistory:
    """One raw signal as observed, before demand was derived from it; NaN where absent."""

    kind: SignalKind
    timestamps: FloatArray
    values: FloatArray


@dataclass(frozen=True, slots=True)
class ReplicaHistory:
    """The scale target's replicas as observed at each step; NaN where no count was read."""

    timestamps: FloatArray
    ready: FloatArray
    desired: FloatArray


@dataclass(frozen=True, slots=True)
class DemandDerivation:
    """How the newest step's offered demand was derived from the raw signals."""

    value: float
    """NaN when the signals did not determine it."""
    source: str
    description: str
    lower_bound: bool = False
    """Demand is at least `value`: the signals were censored (saturation, a backlog, silent pods)."""
    saturated: bool = False
    missing_pods: int = 0


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    key: TargetKey
    spec: ScalerSpec
    metric_name: str
    status: TargetStatus
    updated_at: float
    last_sample_at: float | None
    decision: Decision | None
    decided_at: float | None
    """The step `decision` was made for (on the step grid): every replica's decision for it is the same."""
    forecast: Forecast | None
    forecast_start: float | None  # timestamp of forecast step 1
    history_timestamps: FloatArray
    history_values: FloatArray
    chosen_model: str | None
    model_scores: tuple[ModelScore, ...]
    seasonal_periods: tuple[int, ...]
    target_coverage: float
    achieved_coverage: float | None
    forecast_error_mase: float | None
    last_error: str | None
    last_fit_seconds: float | None = None
    last_update_seconds: float | None = None
    prometheus_errors: int = 0
    observed_replicas: ReplicaCounts | None = None
    """The scale target's replicas as last observed (ready and desired), if read."""
    signal_histories: tuple[SignalHistory, ...] = ()
    """The raw signals `history_values` (offered demand) was derived from, trimmed alike."""
    replica_history: ReplicaHistory | None = None
    demand_derivation: DemandDerivation | None = None

    @property
    def servable(self) -> bool:
        return self.status is TargetStatus.READY and self.decision is not None


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    generated_at: float
    generation: int = 0
    targets: Mapping[TargetKey, TargetSnapshot] = field(default_factory=lambda: MappingProxyType({}))
    fits_waiting: int = 0
    """Targets whose due refit waits for a free fit worker."""
    fits_running: int = 0

    def get(self, key: TargetKey) -> TargetSnapshot | None:
        return self.targets.get(key)
