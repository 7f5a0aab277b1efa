"""Value types shared by every layer. Pure: no I/O, no clock."""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class MetricKind(enum.Enum):
    """How a metric relates to replicas.

    LOAD: total demand (requests/s, queue depth, tokens/s); one replica serves
    `capacity_per_replica` of it.
    UTILISATION: a per-replica average (GPU memory pressure); the plan scales the
    current replica count by forecast / target.
    """

    LOAD = "load"
    UTILISATION = "utilisation"


@dataclass(frozen=True, slots=True)
class TargetKey:
    """Identity of one scaled target: the ScaledObject plus a digest of its metadata.

    Two triggers on one ScaledObject differ in metadata, so they are two targets.
    """

    namespace: str
    name: str
    metadata_digest: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}#{self.metadata_digest[:8]}"


@dataclass(frozen=True, slots=True)
class Forecast:
    """A probabilistic forecast on a regular grid.

    `values[i, j]` is the `levels[j]` quantile of the series at step `i + 1` after the
    last observation. Rows are non-decreasing across levels (no quantile crossing).
    """

    step_seconds: float
    levels: tuple[float, ...]
    values: FloatArray
    model: str

    @property
    def horizon(self) -> int:
        return int(self.values.shape[0])

    def quantile(self, level: float) -> FloatArray:
        """The path of one quantile level, interpolated linearly between stored levels.

        Outside the stored levels the nearest level is used: extrapolating the tails of
        an empirical band is less trustworthy than clamping, and the planner's
        calibration corrects the remaining bias. One vector operation for all steps:
        the planner reads several paths per decision.
        """
        levels = self.levels
        if level <= levels[0]:
            return self.values[:, 0].copy()
        if level >= levels[-1]:
            return self.values[:, -1].copy()
        upper = bisect.bisect_left(levels, level)
        if levels[upper] == level:
            return self.values[:, upper].copy()
        weight = (level - levels[upper - 1]) / (levels[upper] - levels[upper - 1])
        path: FloatArray = self.values[:, upper - 1] * (1.0 - weight) + self.values[:, upper] * weight
        return path

    def median(self) -> FloatArray:
        return self.quantile(0.5)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the planner asks for at one instant, and why.

    `replicas` is never below `reactive_replicas`; `buffer_replicas` are placeholder
    pods that keep nodes warm for the demand expected past the pod lead time.
    """

    replicas: int
    reactive_replicas: int
    buffer_replicas: int
    reason: str
    forecast_at_lead: float
    forecast_at_node_lead: float
    quantile_level: float
    predictive: bool


@dataclass(frozen=True, slots=True)
class ModelScore:
    """A candidate model's rolling-origin backtest error at the lead horizon."""

    model: str
    mase: float
    pinball: float
    coverage: float
    failed: str | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """Outcome of per-series model selection."""

    chosen: str
    scores: tuple[ModelScore, ...] = field(default_factory=tuple)
    seasonal_periods: tuple[int, ...] = field(default_factory=tuple)


def as_float_array(values: Sequence[float] | FloatArray) -> FloatArray:
    return np.asarray(values, dtype=np.float64)
