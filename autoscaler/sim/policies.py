"""The scaling policies a backtest compares on one cluster model.

A policy sees the trace one row at a time: `decide(now, current_replicas)` for row t
is called before `observe(now, value)` hands it row t, so a decision can only use
rows before t. The oracle is the one exception, by design: it is given the whole
trace to show the best any policy could do.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from autoscaler.domain.signals import StepSignals
from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import FloatArray
from autoscaler.planner.pipeline import TargetPipeline
from autoscaler.planner.plan import PlannerState, damp
from autoscaler.planner.reactive import clamp_replicas, reactive_load, replicas_for_demand
from autoscaler.planner.replay import rebuild_boundary, rebuilt_pipeline, window_start

HPA_STABILIZATION_SECONDS = 300.0
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    replicas: int
    buffer_replicas: int
    forecast: float  # the demand the policy planned for; NaN when it did not forecast
    reason: str = ""


class Policy(Protocol):
    name: str

    def decide(self, now: float, current_replicas: int) -> PolicyDecision: ...

    def observe(self, now: float, value: float) -> None: ...


class HpaStabilisation:
    """The HPA's default damping: never below the highest recommendation of the last
    five minutes, and no limit on the rate of change."""

    def __init__(self) -> None:
        self._state = PlannerState()

    def __call__(self, *, now: float, raw: int, current_replicas: int) -> int:
        replicas, _, self._state = damp(
            now=now,
            raw=raw,
            current_replicas=current_replicas,
            state=self._state,
            stabilization_seconds=HPA_STABILIZATION_SECONDS,
            percent_per_minute=None,
        )
        return replicas


class ReactivePolicy:
    """KEDA/HPA: the last observed value (one step late), 10% tolerance, 5-minute window."""

    name = "reactive"

    def __init__(self, spec: ScalerSpec) -> None:
        self.spec = spec
        self._latest = math.nan
        self._stabilised = HpaStabilisation()

    def decide(self, now: float, current_replicas: int) -> PolicyDecision:
        replicas = self._stabilised(
            now=now, raw=self._recommendation(current_replicas), current_replicas=current_replicas
        )
        return PolicyDecision(replicas=replicas, buffer_replicas=0, forecast=math.nan)

    def _recommendation(self, current_replicas: int) -> int:
        replicas, _ = reactive_load(
            demand=self._latest,
            capacity_per_replica=self.spec.capacity_per_replica,
            current_replicas=current_replicas,
            min_replicas=self.spec.min_replicas,
            max_replicas=self.spec.max_replicas,
        )
        return replicas

    def observe(self, now: float, value: float) -> None:
        self._latest = value


class HoltWintersPolicy(ReactivePolicy):
    """In the style of the predictive-horizontal-pod-autoscaler (PHPA).

    It models the HPA's own replica evaluations with additive Holt-Winters (daily
    season), predicts the replicas over the lead time, and takes the larger of that and
    the HPA's answer; no calibration, no node buffer. statsmodels refits the smoothing
    parameters once per day of data on a sliding window of `stored_seasons` days; between
    refits each evaluation advances the same recursions in O(1), which is what refitting
    at every evaluation with those parameters would give, at a fraction of the cost.
    """

    name = "holt-winters"

    def __init__(self, spec: ScalerSpec, *, stored_seasons: int = 4) -> None:
        super().__init__(spec)
        self.season = max(2, round(SECONDS_PER_DAY / spec.step_seconds))
        self.stored_seasons = stored_seasons
        self._evaluations: deque[float] = deque(maxlen=stored_seasons * self.season)
        self._since_fit = 0
        self._model: _AdditiveHoltWinters | None = None

    def decide(self, now: float, current_replicas: int) -> PolicyDecision:
        reactive = self._recommendation(current_replicas)
        forecast = math.nan
        raw = reactive
        if self._model is not None:
            path = self._model.forecast(self.spec.lead_steps + 1)
            forecast = float(path.max()) * self.spec.capacity_per_replica
            predicted = math.ceil(float(path.max()) - 1e-9)
            raw = clamp_replicas(
                max(predicted, reactive), min_replicas=self.spec.min_replicas, max_replicas=self.spec.max_replicas
            )
        replicas = self._stabilised(now=now, raw=raw, current_replicas=current_replicas)
        return PolicyDecision(replicas=replicas, buffer_replicas=0, forecast=forecast)

    def observe(self, now: float, value: float) -> None:
        super().observe(now, value)
        evaluation = float(replicas_for_demand(value, self.spec.capacity_per_replica))
        self._evaluations.append(evaluation)
        self._since_fit += 1
        if self._model is not None:
            self._model.update(evaluation)
        if len(self._evaluations) >= 2 * self.season and (self._model is None or self._since_fit >= self.season):
            self._model = _AdditiveHoltWinters.fit(np.asarray(self._evaluations), self.season, previous=self._model)
            self._since_fit = 0


@dataclass(slots=True)
class _AdditiveHoltWinters:
    """Additive-trend, additive-season recursions with statsmodels' fitted parameters."""

    alpha: float
    beta: float
    gamma: float
    level: float
    trend: float
    seasonals: deque[float]  # seasonals[0] applies to the next step

    @classmethod
    def fit(cls, values: FloatArray, season: int, previous: _AdditiveHoltWinters | None = None) -> _AdditiveHoltWinters:
        """statsmodels' fit; a refit starts its optimiser from the previous parameters.

        Without them statsmodels first grid-searches the smoothing parameters, over 80%
        of a fit; a day's new data barely moves the optimum, so the warm start lands on
        the same parameters in a fraction of the time.
        """
        model = ExponentialSmoothing(
            values, trend="add", seasonal="add", seasonal_periods=season, initialization_method="heuristic"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on flat stretches
            if previous is None:
                result = model.fit()
            else:
                start = np.array([previous.alpha, previous.beta, previous.gamma])
                result = model.fit(start_params=start, use_brute=False)
        return cls(
            alpha=float(result.params["smoothing_level"]),
            beta=float(result.params["smoothing_trend"]),
            gamma=float(result.params["smoothing_seasonal"]),
            level=float(result.level[-1]),
            trend=float(result.trend[-1]),
            seasonals=deque(float(value) for value in result.season[-season:]),
        )

    def update(self, value: float) -> None:
        seasonal = self.seasonals.popleft()
        previous_level, previous_trend = self.level, self.trend
        if not math.isfinite(value):
            self.level = previous_level + previous_trend
            self.seasonals.append(seasonal)
            return
        self.level = self.alpha * (value - seasonal) + (1 - self.alpha) * (previous_level + previous_trend)
        self.trend = self.beta * (self.level - previous_level) + (1 - self.beta) * previous_trend
        self.seasonals.append(self.gamma * (value - previous_level - previous_trend) + (1 - self.gamma) * seasonal)

    def forecast(self, horizon: int) -> FloatArray:
        season = len(self.seasonals)
        return np.array(
            [self.level + step * self.trend + self.seasonals[(step - 1) % season] for step in range(1, horizon + 1)]
        )


class DailyRebuild:
    """The daemon's daily rebuild (docs/reliability.md) for a simulated pipeline.

    Where the newest step crosses a new boundary of the target's daily grid, every daemon
    replica replaces the pipeline by the replay of the history window that ends there
    and of the steps since; so does this, on the steps it was given. Without it a
    backtest keeps state (the calibrator's level above all) that the daemon rebuilds.
    """

    def __init__(self, spec: ScalerSpec) -> None:
        self._spec = spec
        self._steps: deque[StepSignals] = deque()
        self._boundary: float | None = None

    def remember(self, step: StepSignals) -> None:
        self._steps.append(step)

    def __len__(self) -> int:
        """The steps kept: the window of the last boundary and the steps since."""
        return len(self._steps)

    def rebuilt(self, pipeline: TargetPipeline) -> TargetPipeline:
        """`pipeline`, or the replay that replaces it when the newest step crossed a new boundary."""
        if not self._steps:
            return pipeline
        phase = pipeline.refit_phase_steps
        boundary = rebuild_boundary(self._spec, refit_phase_steps=phase, at=self._steps[-1].timestamp)
        previous, self._boundary = self._boundary, boundary
        if previous is None or boundary <= previous:  # a daemon's first boundary is its warm start's
            return pipeline
        start = window_start(self._spec, boundary)
        while self._steps[0].timestamp < start:  # no later window reaches back this far
            self._steps.popleft()
        return rebuilt_pipeline(self._spec, self._steps, refit_phase_steps=phase, boundary=boundary)


class OursPolicy:
    """The daemon's `TargetPipeline`; refits run inline, as if the worker were instant.

    With `daily_rebuild` it also makes the daemon's daily rebuild, at the daemon's cost.
    """

    name = "ours"

    def __init__(self, pipeline: TargetPipeline, *, daily_rebuild: bool = False) -> None:
        self.pipeline = pipeline
        self.daily_rebuild = DailyRebuild(pipeline.spec) if daily_rebuild else None

    def decide(self, now: float, current_replicas: int) -> PolicyDecision:
        if self.daily_rebuild is not None:
            self.pipeline = self.daily_rebuild.rebuilt(self.pipeline)
        self.pipeline.refit_if_due()
        decision = self.pipeline.decide(now, current_replicas)
        return PolicyDecision(
            replicas=decision.replicas,
            buffer_replicas=decision.buffer_replicas,
            forecast=decision.forecast_at_lead,
            reason=decision.reason,
        )

    def observe(self, now: float, value: float) -> None:
        step = self.pipeline.primary_step(now, value)
        if self.daily_rebuild is not None:
            self.daily_rebuild.remember(step)
        self.pipeline.observe_step(step)


class OraclePolicy:
    """Perfect foresight: exactly the replicas the next lead time's true demand needs.

    It keeps nodes warm for the true demand over the node lead time, with no cap, and
    does no damping: a lower bound on cost for near-zero unserved demand.
    """

    name = "oracle"

    def __init__(self, spec: ScalerSpec, demand: FloatArray) -> None:
        self.spec = spec
        self._demand = demand
        self._row = 0

    def decide(self, now: float, current_replicas: int) -> PolicyDecision:
        lead = self._demand[self._row : self._row + self.spec.lead_steps + 1]
        node = self._demand[self._row : self._row + self.spec.node_lead_steps + 1]
        bounds = {"min_replicas": self.spec.min_replicas, "max_replicas": self.spec.max_replicas}
        replicas = clamp_replicas(replicas_for_demand(float(lead.max()), self.spec.capacity_per_replica), **bounds)
        node_need = clamp_replicas(replicas_for_demand(float(node.max()), self.spec.capacity_per_replica), **bounds)
        return PolicyDecision(
            replicas=replicas, buffer_replicas=max(0, node_need - replicas), forecast=float(lead.max())
        )

    def observe(self, now: float, value: float) -> None:
        self._row += 1
