"""`TargetPipeline`: one target's history, model, calibrator and planner state.

The backtest and the daemon's engine drive the same object, so a backtest shows what
the daemon would have done:

    pipeline.observe_step(signals)              # O(1): derive demand, buffer writes, model update
    if pipeline.refit_due():
        inputs = pipeline.refit_inputs()        # O(1): a read-only view of the window
        fitted = fit_for(inputs)                # slow: the engine runs it in a worker
        pipeline.install(fitted)                # catches the new model up, then swaps
    decision = pipeline.decide(now, observed_replicas=counts)

(`refit_if_due` is the middle three lines, for a caller that fits inline.)

The model sees offered demand (autoscaler.demand), never a raw series that our own
replicas shape; the raw signals and the observed replicas are kept beside it for the
inspection API. `observe(timestamp, value)` is the single-series form: the value is the
target's primary signal (a load series is its own demand, so the open-loop backtest of
a load trace is what it was before signals were typed).

Refits are amortised: the first once `min_points` steps exist, then each time the
history has doubled while it is short, then each time the data crosses a boundary of an
`interval_seconds` grid (shifted by the target's own phase, so a fleet's refits spread
out). Under `model: auto` the per-series selection (a backtest of every candidate, most
of a fit's cost) reruns while the history grows and then every `reselect_seconds`; the
refits in between fit the model it chose.

Every transition is a function of the steps observed, never of the wall clock or of
how long a fit took: the model fitted at a step serves from that step's decision on.
So two replicas of the daemon that see the same data reach the same state, and a
replica that replays the history window (`autoscaler.planner.replay`) reaches the
state of one that never stopped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from autoscaler.demand.derive import DemandEstimate, DemandUnits, derive_demand, finite
from autoscaler.domain.signals import ReplicaCounts, SignalKind, StepSignals
from autoscaler.domain.spec import ScalerSpec, primary_signal
from autoscaler.domain.types import Decision, FloatArray, Forecast, MetricKind, Selection
from autoscaler.forecast.base import DEFAULT_LEVELS, Forecaster
from autoscaler.forecast.fallback import FIT_FAILURES
from autoscaler.forecast.selector import make_forecaster
from autoscaler.history.series import SeriesBuffer
from autoscaler.planner.calibration import DEFAULT_WINDOW, CoverageCalibrator, FloatRing, Prediction
from autoscaler.planner.headroom import BurstModel, fit_bursts
from autoscaler.planner.plan import Calibration, PlannerState, SafetyTerms, plan
from autoscaler.planner.reactive import reactive_on_signals

ForecasterFactory = Callable[[str, int], Forecaster]
SCALE_FLOOR_SHARE = 0.05
FALLBACK_MODEL = "naive"
SIGNAL_HISTORY_POINTS = 1440
"""Raw signals and replica counts kept for the inspection API: a day at 60 s steps."""
DEMAND_KINDS = frozenset({SignalKind.ARRIVALS, SignalKind.COMPLETIONS, SignalKind.UTILIZATION})
SATURATED_LOAD_TARGET = 0.8
"""Replicas at capacity show no demand above it: a load target then grows as the HPA
would on a utilisation pinned at 100 % against this target (x1.25 a step)."""
QUEUE_PROBE_DOWN = 0.1
"""Share of the replicas a queue-only target gives up per step while its queue is empty."""


def default_factory(model: str, lead_steps: int) -> Forecaster:
    return make_forecaster(model, lead_steps=lead_steps)


@dataclass(frozen=True, slots=True)
class RefitSchedule:
    """When to refit: first at `min_points` steps, doubling while short, then by interval."""

    min_points: int = 24
    growth: float = 2.0
    interval_seconds: float = 24 * 3600.0
    min_interval_steps: int = 96
    reselect_seconds: float = 7 * 86400.0

    def interval_steps(self, step_seconds: float) -> int:
        """The refit grid's spacing in steps, after the growth phase."""
        return max(self.min_interval_steps, math.ceil(self.interval_seconds / step_seconds - 1e-9))

    def reselect_steps(self, step_seconds: float) -> int:
        """The spacing in steps of the grid `auto` reselects on."""
        return max(1, math.ceil(self.reselect_seconds / step_seconds - 1e-9))


def last_grid_end(end_step: int, *, spacing: int, phase: int) -> int:
    """The newest end step at or before `end_step` on a grid of `spacing` steps shifted
    by `phase`. The data crosses the grid between two end steps when this moves."""
    return ((end_step + phase) // spacing) * spacing - phase


@dataclass(frozen=True, slots=True)
class RefitInputs:
    """Everything a fit needs, taken on the serving path; picklable for a process pool.

    `values` is a read-only view that later writes to the history never change.
    """

    values: FloatArray
    end_step: int
    step_seconds: float
    model: str
    lead_steps: int
    factory: ForecasterFactory


@dataclass(frozen=True, slots=True)
class FittedModel:
    """A fitted forecaster (or why there is none) and the step its data ended at."""

    forecaster: Forecaster | None
    end_step: int
    error: str | None = None


def fit_for(inputs: RefitInputs) -> FittedModel:
    """Fit the configured model; fall back to naive when it cannot fit. Never raises for data."""
    errors: list[str] = []
    for model in dict.fromkeys((inputs.model, FALLBACK_MODEL)):
        try:
            forecaster = inputs.factory(model, inputs.lead_steps).fit(inputs.values, step_seconds=inputs.step_seconds)
        except FIT_FAILURES as error:
            errors.append(f"{model}: {error}")
            continue
        return FittedModel(forecaster=forecaster, end_step=inputs.end_step, error="; ".join(errors) or None)
    return FittedModel(forecaster=None, end_step=inputs.end_step, error="; ".join(errors))


class TargetPipeline:
    """The per-target state machine shared by the engine and the backtest."""

    def __init__(
        self,
        spec: ScalerSpec,
        *,
        factory: ForecasterFactory = default_factory,
        schedule: RefitSchedule | None = None,
        signal_history_points: int = SIGNAL_HISTORY_POINTS,
        refit_phase_steps: int = 0,
    ) -> None:
        """`refit_phase_steps` shifts this target's refit grid; the engine derives it from
        the target's key, so every replica refits a target at the same steps."""
        self.spec = spec
        self.schedule = schedule or RefitSchedule()
        self._refit_phase = refit_phase_steps
        self._factory = factory
        self._buffer = SeriesBuffer(step_seconds=spec.step_seconds, capacity=spec.history_points)
        self._recent: deque[float] = deque(maxlen=spec.lead_steps + 1)
        self._typical_level = FloatRing(DEFAULT_WINDOW)
        self._calibrator = CoverageCalibrator(
            target_coverage=spec.target_coverage, lead_steps=spec.lead_steps, basis=spec.coverage_basis
        )
        self._state = PlannerState()
        self._forecaster: Forecaster | None = None
        self._selection: Selection | None = None
        self._selected_end_step: int | None = None
        self._fitted_end_step: int | None = None
        self._requested_end_step: int | None = None
        self._requested_points = 0
        self._levels = tuple(sorted({*DEFAULT_LEVELS, spec.target_coverage}))
        self._horizon = spec.node_lead_steps + 1
        self._forecast: Forecast | None = None
        self._forecast_start: float | None = None
        self._decision: Decision | None = None
        self._bursts: BurstModel | None = None
        self._bursts_end_step: int | None = None
        self.last_fit_error: str | None = None
        self._units = DemandUnits(
            capacity_per_replica=spec.capacity_per_replica, target_utilization=spec.target_utilization
        )
        self._primary_kind = _primary_kind(spec)
        self._measures_demand = not spec.signals or bool(spec.signal_kinds & DEMAND_KINDS)
        self._signal_points = min(spec.history_points, signal_history_points)
        self._signals: dict[SignalKind, SeriesBuffer] = {}
        self._ready = SeriesBuffer(step_seconds=spec.step_seconds, capacity=self._signal_points)
        self._desired = SeriesBuffer(step_seconds=spec.step_seconds, capacity=self._signal_points)
        self._last_signals: StepSignals | None = None
        self._estimate: DemandEstimate | None = None
        self._replicas: ReplicaCounts | None = None
        self._replicas_at: float | None = None

    # -- data -------------------------------------------------------------------------

    def observe(self, timestamp: float, value: float) -> None:
        """One sample of the target's primary signal (its demand, for a load series)."""
        self.observe_step(self.primary_step(timestamp, value))

    def primary_step(self, timestamp: float, value: float) -> StepSignals:
        """The step that `observe(timestamp, value)` folds in."""
        return StepSignals(timestamp=timestamp, values={self._primary_kind: value})

    def observe_step(self, signals: StepSignals) -> None:
        """Derive the step's offered demand and fold it in; keep the raw signals and replicas."""
        timestamp = signals.timestamp
        if signals.replicas is not None:
            self._remember_replicas(timestamp, signals.replicas)
        for kind, value in signals.values.items():
            self._signal_buffer(kind).put(timestamp, value)
        ready = None if self._replicas is None else self._replicas.ready
        previous = self._last_signals
        if previous is not None and timestamp < previous.timestamp:
            previous = None  # a backfill: no neighbour to difference against
        estimate = derive_demand(signals, previous, units=self._units, ready=ready)
        if self._last_signals is None or timestamp >= self._last_signals.timestamp:
            self._last_signals, self._estimate = signals, estimate
        self._fold(timestamp, estimate.value)

    def _remember_replicas(self, timestamp: float, replicas: ReplicaCounts) -> None:
        self._ready.put(timestamp, float(replicas.ready))
        self._desired.put(timestamp, math.nan if replicas.desired is None else float(replicas.desired))
        if self._replicas_at is None or timestamp >= self._replicas_at:
            self._replicas, self._replicas_at = replicas, timestamp

    def _signal_buffer(self, kind: SignalKind) -> SeriesBuffer:
        buffer = self._signals.get(kind)
        if buffer is None:
            buffer = SeriesBuffer(step_seconds=self.spec.step_seconds, capacity=self._signal_points)
            self._signals[kind] = buffer
        return buffer

    def _fold(self, timestamp: float, value: float) -> None:
        """Store one demand sample; a new step also updates the model and the calibrator."""
        step = self._buffer.step_index(timestamp)
        end = self._end_step()
        if not self._buffer.put(timestamp, value):
            return
        if end is not None and step < end:
            return  # a backfill inside the window: the next refit picks it up
        skipped = 0 if end is None else min(step - end, self._buffer.capacity)
        for _ in range(skipped):
            self._advance(math.nan)
        self._advance(value)
        if math.isfinite(value):
            self._typical_level.push(abs(value))
        naive_error = abs(value - self._recent[0]) if len(self._recent) == self._recent.maxlen else None
        self._calibrator.observe(step=step, actual=value, naive_error=naive_error)

    def _advance(self, value: float) -> None:
        self._recent.append(value)
        if self._forecaster is not None:
            self._forecaster.update(value)

    def _end_step(self) -> int | None:
        end = self._buffer.end_timestamp
        return None if end is None else self._buffer.step_index(end)

    # -- refits -----------------------------------------------------------------------

    def refit_due(self) -> bool:
        """Whether the data observed so far calls for a refit now (see the module docstring)."""
        points = len(self._buffer)
        end = self._end_step()
        if not self._measures_demand or points < self.schedule.min_points or end is None:
            return False
        if self._requested_end_step is None:
            return True
        if points < self._buffer.capacity and points >= self.schedule.growth * self._requested_points:
            return True
        interval = self.schedule.interval_steps(self.spec.step_seconds)
        return last_grid_end(end, spacing=interval, phase=self._refit_phase) > self._requested_end_step

    def refit_if_due(self, fit: Callable[[RefitInputs], FittedModel] = fit_for) -> bool:
        """Refit inline when due, as the engine does at this step; True when it refitted."""
        if not self.refit_due():
            return False
        self.install(fit(self.refit_inputs()))
        return True

    def refit_inputs(self) -> RefitInputs:
        end = self._end_step()
        if end is None:
            raise ValueError("no history to fit")
        self._requested_end_step = end
        self._requested_points = len(self._buffer)
        return RefitInputs(
            values=self._buffer.values(),
            end_step=end,
            step_seconds=self.spec.step_seconds,
            model=self._model_to_fit(end),
            lead_steps=self.spec.lead_steps,
            factory=self._factory,
        )

    def _model_to_fit(self, end_step: int) -> str:
        """`auto` reselects while history grows and at each boundary of the `reselect_seconds`
        grid (on the refit grid's phase); else it refits its last pick."""
        if self.spec.model != "auto" or self._selection is None or self._selected_end_step is None:
            return self.spec.model
        if len(self._buffer) < self._buffer.capacity:
            return self.spec.model
        reselect = self.schedule.reselect_steps(self.spec.step_seconds)
        if last_grid_end(end_step, spacing=reselect, phase=self._refit_phase) > self._selected_end_step:
            return self.spec.model
        return self._selection.chosen

    def install(self, fitted: FittedModel) -> None:
        """Swap in a fitted model after replaying the steps observed since its copy."""
        self.last_fit_error = fitted.error
        if fitted.forecaster is None:
            return
        if self._fitted_end_step is not None and fitted.end_step < self._fitted_end_step:
            return
        end = self._end_step()
        missed = 0 if end is None else end - fitted.end_step
        if missed > 0:
            for value in self._buffer.values()[-missed:]:
                fitted.forecaster.update(float(value))
        self._forecaster = fitted.forecaster
        self._fitted_end_step = fitted.end_step
        selection = getattr(fitted.forecaster, "selection_", None)
        if isinstance(selection, Selection):
            self._selection = selection
            self._selected_end_step = fitted.end_step

    # -- decisions --------------------------------------------------------------------

    def decide(
        self, now: float, current_replicas: int | None = None, *, observed_replicas: ReplicaCounts | None = None
    ) -> Decision:
        """Plan for `now` from the replicas as observed (never our own last plan).

        `observed_replicas` are this step's counts; when None, the last counts observed
        are used and the reason says so. `current_replicas` is the single-series form:
        a count known to be both ready and desired (the backtest's cluster).
        """
        if observed_replicas is None and current_replicas is not None:
            observed_replicas = ReplicaCounts(ready=current_replicas, desired=current_replicas)
        if observed_replicas is not None:
            self._remember_replicas(now, observed_replicas)
        replicas, replica_note = self._replicas_for_decision(now, observed=observed_replicas is not None)
        current = replicas.ready if replicas.desired is None else replicas.desired
        forecast, cold_start = self._current_forecast(now)
        calibration = Calibration(level=self._calibrator.level, offset=0.0)
        prediction: Prediction | None = None
        if forecast is not None:
            prediction = self._prediction(forecast)
            calibration = replace(calibration, offset=self._calibrator.offset(prediction.scale))
        decision, self._state = plan(
            now=now,
            spec=self.spec,
            latest_value=self._buffer.latest(),
            forecast=forecast,
            calibration=calibration,
            current_replicas=current,
            state=self._state,
            cold_start=cold_start,
            safety=self._safety(replicas, current),
            bursts=self._burst_model(),
        )
        if replica_note:
            decision = replace(decision, reason=f"{decision.reason}; {replica_note}")
        if prediction is not None and decision.predictive:
            self._calibrator.record(replace(prediction, planned=self._planned_cover(decision, prediction, calibration)))
        self._decision = decision
        return decision

    def _burst_model(self) -> BurstModel | None:
        """The bursts of the window the serving model was fitted on, refitted with it."""
        fitted_end = self._fitted_end_step
        end = self._end_step()
        if fitted_end is None or end is None or fitted_end == self._bursts_end_step:
            return self._bursts
        # The fit's own window, not today's: the same steps observed give the same model.
        kept = len(self._buffer) - max(0, end - fitted_end)
        if kept > 0:
            self._bursts = fit_bursts(self._buffer.timestamps()[:kept], self._buffer.values()[:kept], spec=self.spec)
        self._bursts_end_step = fitted_end
        return self._bursts

    def _replicas_for_decision(self, now: float, *, observed: bool) -> tuple[ReplicaCounts, str]:
        if observed:
            assert self._replicas is not None
            return self._replicas, ""
        if self._replicas is not None and self._replicas_at is not None:
            return self._replicas, (
                f"replicas not observed now: using {self._replicas.ready} ready "
                f"observed {now - self._replicas_at:.0f}s ago"
            )
        floor = self.spec.min_replicas
        return ReplicaCounts(ready=floor, desired=floor), f"replicas never observed: assuming minReplicas {floor}"

    def _safety(self, replicas: ReplicaCounts, current: int) -> SafetyTerms:
        """The reactive terms from the latest step: backlog drain, holds on partial data, KEDA/HPA."""
        signals, estimate = self._last_signals, self._estimate
        if signals is None or estimate is None:
            return SafetyTerms()
        series = reactive_on_signals(self.spec, values=signals.values, ready=replicas.ready, current_replicas=current)
        waiting = finite(signals, SignalKind.WAITING) or 0.0
        drain = 0
        drain_reason = ""
        if waiting > 0 and self.spec.metric_kind is MetricKind.LOAD:
            drain = math.ceil(waiting / (self.spec.drain_time_seconds * self.spec.capacity_per_replica) - 1e-9)
            drain_reason = f"replicas drain {waiting:.4g} waiting within {self.spec.drain_time_seconds:g}s"
        floor, floor_reason = 0, ""
        if estimate.saturated:
            target = self.spec.target_utilization or SATURATED_LOAD_TARGET
            floor = max(current, math.ceil(replicas.ready / target - 1e-9))
            floor_reason = f"{estimate.describe()}: at least {floor}, growing as the HPA would at {target:g}"
        elif estimate.missing_pods:
            floor = current
            floor_reason = f"{estimate.note}: not scaling down below {current}"
        elif estimate.lower_bound:
            floor = current
            floor_reason = f"{estimate.describe()}: not scaling down below {current}"
        elif not self._measures_demand:
            floor, floor_reason = self._queue_only_floor(waiting, replicas, current)
        return SafetyTerms(
            drain_replicas=drain,
            drain_reason=drain_reason,
            floor=floor,
            floor_reason=floor_reason,
            series_reactive=series,
        )

    def _queue_only_floor(self, waiting: float, replicas: ReplicaCounts, current: int) -> tuple[int, str]:
        """A queue alone bounds demand from one side at a time, so probe like a congestion window.

        A backlog says the ready replicas were saturated: grow as the HPA would on a
        utilisation pinned at 100 %. An empty queue says only that demand fits: step down
        by QUEUE_PROBE_DOWN a step, not at once to the queue's answer of zero, so the
        plan settles near the demand instead of see-sawing between empty and overload.
        """
        if waiting > 0:
            floor = max(current, math.ceil(replicas.ready / SATURATED_LOAD_TARGET - 1e-9))
            return floor, (
                f"{waiting:.4g} waiting: the {replicas.ready} ready replicas are saturated, at least {floor}"
            )
        floor = math.floor(current * (1.0 - QUEUE_PROBE_DOWN))
        return floor, f"queue empty: demand fits, stepping down at most {QUEUE_PROBE_DOWN:.0%} to {floor}"

    def _current_forecast(self, now: float) -> tuple[Forecast | None, str | None]:
        if not self._measures_demand:
            return None, "no demand signal (a queue alone only bounds demand), so the plan is reactive"
        end_timestamp = self._buffer.end_timestamp
        if self._forecaster is None or end_timestamp is None:
            return None, (
                f"cold start: {len(self._buffer)} {'step' if len(self._buffer) == 1 else 'steps'} of history, "
                f"forecasting from {self.schedule.min_points}"
            )
        behind = max(0, math.floor((now - end_timestamp) / self.spec.step_seconds + 1e-9))
        if behind > self.spec.lead_steps:
            return None, f"history is stale: newest step ended {now - end_timestamp:.0f}s ago"
        raw = self._forecaster.predict(self._horizon + behind, self._levels)
        forecast = raw if behind == 0 else replace(raw, values=raw.values[behind:])
        self._forecast = forecast
        self._forecast_start = end_timestamp + behind * self.spec.step_seconds
        return forecast, None

    def _prediction(self, forecast: Forecast) -> Prediction:
        """What the calibrator will check: the nominal quantile at the last step of the lead span.

        The scale normalising its scores is the forecast's interdecile spread, floored at
        a share of the series' typical level: a model sure of itself at a quiet hour
        would otherwise turn one surprise into an enormous score that then inflates
        every later offset.
        """
        index = min(self.spec.lead_steps, forecast.horizon - 1)
        base = float(forecast.quantile(self.spec.target_coverage)[index])
        median = float(forecast.quantile(0.5)[index])
        spread = float(forecast.quantile(0.9)[index] - forecast.quantile(0.1)[index])
        typical = self._typical_level.mean() or 0.0
        scale = max(spread, SCALE_FLOOR_SHARE * typical, 1e-9 * self.spec.capacity_per_replica)
        assert self._forecast_start is not None
        first_step = self._buffer.step_index(self._forecast_start)
        return Prediction(target_step=first_step + index, base=base, median=median, scale=scale, planned=base)

    def _planned_cover(self, decision: Decision, prediction: Prediction, calibration: Calibration) -> float:
        """The demand the decision covers at the lead time: replicas x capacity.

        Demand is in the units of capacityPerReplica whatever the target measures (a
        utilisation is turned into demand first), so this holds for every target.
        """
        return decision.replicas * self.spec.capacity_per_replica

    # -- read-only views for the inspection API ---------------------------------------

    @property
    def refit_phase_steps(self) -> int:
        return self._refit_phase

    @property
    def decision(self) -> Decision | None:
        return self._decision

    @property
    def forecast(self) -> Forecast | None:
        return self._forecast

    @property
    def forecast_start(self) -> float | None:
        """Timestamp of the first step of `forecast`."""
        return self._forecast_start

    @property
    def chosen_model(self) -> str | None:
        """The model serving now: under `auto`, the one the last selection picked."""
        if self._forecaster is None:
            return None
        selection = getattr(self._forecaster, "selection_", None)
        return selection.chosen if isinstance(selection, Selection) else self._forecaster.name

    @property
    def selection(self) -> Selection | None:
        """The last selection's scores under `auto`; None for a fixed model."""
        return self._selection

    @property
    def achieved_coverage(self) -> float | None:
        return self._calibrator.achieved_coverage

    @property
    def forecast_error_mase(self) -> float | None:
        return self._calibrator.mase

    @property
    def history_points(self) -> int:
        return len(self._buffer)

    def history(self) -> tuple[FloatArray, FloatArray]:
        """(timestamps, offered demand) of the stored window; `values` is a read-only view
        that later writes never change."""
        return self._buffer.timestamps(), self._buffer.values()

    def signal_history(self) -> dict[SignalKind, tuple[FloatArray, FloatArray]]:
        """(timestamps, values) of each raw signal observed, over the last day of steps."""
        return {kind: (buffer.timestamps(), buffer.values()) for kind, buffer in self._signals.items()}

    def replica_history(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(timestamps, ready, desired) as observed; NaN where a step had no count."""
        return self._ready.timestamps(), self._ready.values(), self._desired.values()

    @property
    def demand_estimate(self) -> DemandEstimate | None:
        """How the newest step's demand was derived, and whether it is only a lower bound."""
        return self._estimate

    @property
    def observed_replicas(self) -> ReplicaCounts | None:
        """The newest replica counts observed (or given to `decide`)."""
        return self._replicas


def _primary_kind(spec: ScalerSpec) -> SignalKind:
    """What a single-series `observe` value measures."""
    if spec.signals:
        return primary_signal(spec.signals, preset=spec.preset).kind
    return SignalKind.UTILIZATION if spec.metric_kind is MetricKind.UTILISATION else SignalKind.ARRIVALS
