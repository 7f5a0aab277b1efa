"""A serving model: replicas serve a FIFO backlog of requests that give up after a patience.

Pure and deterministic, a fluid model on the trace's step. Requests arriving during a
step join the back of the queue; the ready replicas serve `capacity_per_replica`
requests per second, oldest first, in ticks of at most a minute. A request may wait
about `patience_seconds` (see `ServingConfig.wait_ticks`); one still queued after that
gives up (demand lost). A request served in a later tick than it arrived in counts as
delayed.

Each step reports what a Prometheus scrape of the serving pods would show: arrivals and
completions per second, requests waiting and running, the busy share of the ready
replicas (the utilisation; NaN with no ready pod to report it) and the pods reporting.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from autoscaler.domain.signals import SignalKind

EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class ServingConfig:
    step_seconds: float
    capacity_per_replica: float
    patience_seconds: float = 120.0
    service_seconds: float = 10.0
    """Mean time one request is in service: `running` = completions x this (Little's law)."""
    tick_seconds: float = 60.0
    """Longest sub-step the queue is served in: a step longer than the patience would
    otherwise hide every backlog (all of it gives up before the step ends)."""

    def __post_init__(self) -> None:
        if self.step_seconds <= 0 or self.capacity_per_replica <= 0 or self.tick_seconds <= 0:
            raise ValueError("step_seconds, capacity_per_replica and tick_seconds must be positive")
        if self.patience_seconds < 0 or self.service_seconds < 0:
            raise ValueError("patience and service time must not be negative")

    @property
    def ticks_per_step(self) -> int:
        return max(1, math.ceil(self.step_seconds / self.tick_seconds - EPSILON))

    @property
    def wait_ticks(self) -> int:
        """Ticks after its arrival tick in which a queued request may still be served.

        A request arrives mid-tick on average, so one that waits through n more ticks has
        waited about n + 1/2 ticks: n = ceil(patience / tick) - 1 keeps that within half
        a tick of the patience.
        """
        tick = self.step_seconds / self.ticks_per_step
        return max(0, math.ceil(self.patience_seconds / tick - EPSILON) - 1)


@dataclass(slots=True)
class ServingTotals:
    steps: int = 0
    demand: float = 0.0
    served: float = 0.0
    delayed: float = 0.0
    lost: float = 0.0
    steps_with_backlog: int = 0
    """Steps in which a queue stood at the end of some tick."""

    @property
    def lost_share(self) -> float:
        return self.lost / self.demand if self.demand > 0 else 0.0

    @property
    def delayed_share(self) -> float:
        return self.delayed / self.demand if self.demand > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ServedStep:
    served: float
    lost: float
    observed: dict[SignalKind, float]


@dataclass(slots=True)
class _Cohort:
    arrived_tick: int
    requests: float


@dataclass(slots=True)
class ServingModel:
    """Call `step` once per trace row, in order, with the replicas ready for that step."""

    config: ServingConfig
    totals: ServingTotals = field(default_factory=ServingTotals)
    _queue: deque[_Cohort] = field(default_factory=deque)
    _tick: int = 0

    @property
    def waiting(self) -> float:
        return sum(cohort.requests for cohort in self._queue)

    def step(self, *, arrival_rate: float, ready_replicas: int) -> ServedStep:
        """Serve one step at a constant arrival rate; returns the step's scrape."""
        config = self.config
        ticks = config.ticks_per_step
        tick_seconds = config.step_seconds / ticks
        arrivals = max(0.0, arrival_rate) * tick_seconds
        capacity = max(0, ready_replicas) * config.capacity_per_replica * tick_seconds
        served = lost = 0.0
        backlog = False
        for _ in range(ticks):
            tick_served, tick_lost = self._tick_once(arrivals, capacity)
            served += tick_served
            lost += tick_lost
            backlog = backlog or self.waiting > EPSILON * max(1.0, arrivals)
        totals = self.totals
        totals.steps += 1
        totals.demand += arrivals * ticks
        totals.served += served
        totals.lost += lost
        totals.steps_with_backlog += backlog
        completions = served / config.step_seconds
        observed = {
            SignalKind.ARRIVALS: max(0.0, arrival_rate),
            SignalKind.COMPLETIONS: completions,
            SignalKind.WAITING: self.waiting,
            SignalKind.RUNNING: completions * config.service_seconds,
            SignalKind.UTILIZATION: served / (capacity * ticks) if capacity > 0 else math.nan,
            SignalKind.PODS: float(max(0, ready_replicas)),
        }
        return ServedStep(served=served, lost=lost, observed=observed)

    def _tick_once(self, arrivals: float, capacity: float) -> tuple[float, float]:
        """Queue the tick's arrivals, serve oldest first, drop those out of patience."""
        self._queue.append(_Cohort(arrived_tick=self._tick, requests=arrivals))
        budget = capacity
        while self._queue and budget > EPSILON:
            cohort = self._queue[0]
            taken = min(cohort.requests, budget)
            budget -= taken
            cohort.requests -= taken
            if cohort.arrived_tick < self._tick:
                self.totals.delayed += taken
            if cohort.requests <= EPSILON:
                self._queue.popleft()
        lost = 0.0
        while self._queue and self._tick - self._queue[0].arrived_tick >= self.config.wait_ticks:
            lost += self._queue.popleft().requests
        self._tick += 1
        return capacity - budget, lost
