"""Two daemons on one Prometheus give one answer, and a restarted one rejoins it (issue 16).

Four and a half days of the NASA trace (60 s steps, a daily shape) from its first
midnight are backfilled into a real Prometheus as TSDB blocks, laid on a UTC-midnight
grid days in the past. Two `python -m autoscaler serve` processes run on one replay
clock (`clock.source: replay`): virtual time starts at the trace's fourth midnight
(three days of history behind it, the target's whole `historyWindow`: by the restart,
the oldest data the survivor saw has left the window) and a virtual day takes five wall
minutes. Both get the
same target with GetMetricSpec, then a KEDA-style poller per daemon reads, as often as
it can, the inspection API's view of the target, GetMetrics, and the view again; when
the view did not move in between, the answer is that daemon's answer for the step its
decision was made for (`decided_at`).

Half a virtual day in, the second daemon is killed with SIGKILL and started again with
the same settings. The tests then compare, step by step:

- the two daemons' GetMetrics answers (and the decisions behind them) at every step
  both answered, before the kill;
- the restarted daemon's answers with the survivor's, from its first servable answer on;
- that the steps compared cover at least one virtual day, and that no daemon changed
  its answer for a step while that step was current.

A difference fails the test with the first differing step and both answers; the
comparison summary is printed (`pytest -s`) and is part of every failure message.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc
from autoscaler.adapters.clock import ReplayClock
from tests.integration.daemon_process import (
    Daemon,
    kill_hard,
    leftovers_after_exit,
    metrics_request,
    scaled_object_ref,
    start_daemon,
    target_detail,
)
from tests.integration.prometheus_server import BackfillSeries, PrometheusServer, require_binaries
from tests.traces import read_trace, trace_path

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(900)]

DAY = 86400.0
STEP_SECONDS = 60.0
TRACE = "nasa_http_jul95"  # 60 s steps, a daily shape
METRIC = "two_daemons_requests_per_minute"
HISTORY_DAYS = 3
SPEED = 288.0  # a virtual day in five wall minutes
KILL_AFTER = 0.5 * DAY
RUN_AT_LEAST = DAY
RUN_AT_MOST = 1.3 * DAY
"""Virtual time after the start by which enough steps must have been compared."""
BACKFILLED_AFTER_START = 1.5 * DAY
"""Data past the start: the replay ends before the data does, so no step is stale."""
STEPS_TO_COMPARE = int(DAY / STEP_SECONDS)
STARTUP_WALL_SECONDS = 3.0
POLL_WALL_SECONDS = 0.01
NAMESPACE = "replicas"
NAME = "nasa"
METADATA = {
    "query": f"sum({METRIC})",
    "capacityPerReplica": "20",
    "step": "60s",
    "leadTime": "180s",
    "historyWindow": f"{HISTORY_DAYS}d",  # the oldest data leaves the window as the run goes on
    "model": "auto",
}


@dataclass(frozen=True)
class Answer:
    replicas: int
    """GetMetrics' metricValue."""
    decision: Mapping[str, Any]
    """The inspection API's decision, unchanged from before the GetMetrics call to after it."""


@dataclass
class Recorder:
    """One daemon process's answers, step by step, from a poller thread."""

    label: str
    daemon: Daemon
    answers: dict[float, Answer] = field(default_factory=dict)
    changed: dict[float, list[Answer]] = field(default_factory=dict)
    """Steps whose answer changed while they were the current step: every answer seen."""
    unavailable: int = 0
    failure: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"poll-{self.label}", daemon=True)
        self._thread.start()

    def stop(self, *, check: bool = True) -> None:
        """Stop polling; with `check`, a failure of the poller fails the test here."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if check and self.failure is not None:
            raise AssertionError(f"poller of {self.label} failed: {self.failure!r}") from self.failure

    def snapshot(self) -> dict[float, Answer]:
        with self._lock:
            return dict(self.answers)

    def _run(self) -> None:
        try:
            with grpc.insecure_channel(self.daemon.grpc_address) as channel:
                stub = pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
                stub.GetMetricSpec(scaled_object_ref(NAMESPACE, NAME, METADATA), timeout=10)
                while not self._stop.wait(POLL_WALL_SECONDS):
                    self._poll(stub)
        except BaseException as error:  # reported by stop(), on the test's thread
            self.failure = error

    def _poll(self, stub: pb2_grpc.ExternalScalerStub) -> None:
        before = _decided_step(self.daemon)
        try:
            response = stub.GetMetrics(metrics_request(NAMESPACE, NAME, METADATA), timeout=10)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE, f"{self.label}: {error.code()}: {error.details()}"
            self.unavailable += 1
            return
        after = _decided_step(self.daemon)
        if before is None or before != after:
            return  # the daemon moved on during the call: the answer's step is unknown
        step, decision = before
        answer = Answer(replicas=response.metricValues[0].metricValue, decision=decision)
        with self._lock:
            first = self.answers.setdefault(step, answer)
            if first != answer and answer not in self.changed.setdefault(step, [first]):
                self.changed[step].append(answer)


def _decided_step(daemon: Daemon) -> tuple[float, Mapping[str, Any]] | None:
    """(the step the served decision was made for, that decision), or None before there is one."""
    try:
        detail = target_detail(daemon, NAMESPACE, NAME, METADATA, points=1)
    except urllib.error.HTTPError as error:
        if error.code == 404:  # not registered yet
            return None
        raise
    if detail["decided_at"] is None or detail["decision"] is None:
        return None
    return float(detail["decided_at"]), detail["decision"]


@dataclass(frozen=True)
class Comparison:
    """Two recorders' answers at the steps both answered."""

    first: str
    second: str
    steps: list[float]
    replica_differences: list[float]
    decision_differences: list[float]
    first_answers: dict[float, Answer]
    second_answers: dict[float, Answer]

    @classmethod
    def of(cls, first: Recorder, second: Recorder) -> Comparison:
        mine, theirs = first.snapshot(), second.snapshot()
        steps = sorted(mine.keys() & theirs.keys())
        return cls(
            first=first.label,
            second=second.label,
            steps=steps,
            replica_differences=[step for step in steps if mine[step].replicas != theirs[step].replicas],
            decision_differences=[step for step in steps if mine[step].decision != theirs[step].decision],
            first_answers=mine,
            second_answers=theirs,
        )

    def describe(self, start: float) -> str:
        line = f"{self.first} vs {self.second}: {len(self.steps)} steps compared"
        if self.steps:
            line += f" (virtual +{_hours(self.steps[0], start)} to +{_hours(self.steps[-1], start)})"
        line += (
            f", GetMetrics differs at {len(self.replica_differences)}, the decision at {len(self.decision_differences)}"
        )
        for kind, differences in (("GetMetrics", self.replica_differences), ("decision", self.decision_differences)):
            if differences:
                step = differences[0]
                line += (
                    f"\n  first {kind} difference at step {step:.0f} (virtual +{_hours(step, start)};"
                    f" the last at +{_hours(differences[-1], start)}):"
                    f"\n    {self.first}: {self._shown(self.first_answers[step])}"
                    f"\n    {self.second}: {self._shown(self.second_answers[step])}"
                )
        return line

    @staticmethod
    def _shown(answer: Answer) -> str:
        return f"GetMetrics {answer.replicas}, decision {dict(answer.decision)}"


def _hours(step: float, start: float) -> str:
    return f"{(step - start) / 3600:.2f} h"


@dataclass
class Run:
    start: float
    survivor: Recorder
    killed: Recorder
    restarted: Recorder
    leftovers: list[int]
    wall_seconds: float
    summary: str = ""

    def before_kill(self) -> Comparison:
        return Comparison.of(self.survivor, self.killed)

    def after_restart(self) -> Comparison:
        """A recorder keeps servable answers only: these start at the restarted daemon's first."""
        return Comparison.of(self.survivor, self.restarted)

    def compared_steps(self) -> int:
        return len(self.before_kill().steps) + len(self.after_restart().steps)

    def describe(self) -> str:
        changed = {
            recorder.label: sorted(recorder.changed)
            for recorder in (self.survivor, self.killed, self.restarted)
            if recorder.changed
        }
        return "\n".join(
            [
                f"two daemons on one Prometheus: replay from {self.start:.0f} at {SPEED:.0f}x,"
                f" {self.wall_seconds:.0f} s wall, {self.compared_steps()} steps compared"
                f" (at least {STEPS_TO_COMPARE} wanted)",
                self.before_kill().describe(self.start),
                "after the kill -9, from the restarted daemon's first servable answer: "
                + self.after_restart().describe(self.start),
                f"answers that changed within their own step: {changed or 'none'}",
                "UNAVAILABLE answers: "
                + ", ".join(f"{r.label} {r.unavailable}" for r in (self.survivor, self.killed, self.restarted)),
            ]
        )


def backfill_trace(server: PrometheusServer, *, base: float) -> None:
    """The trace from its first row (a midnight) on, one row per step from `base`."""
    trace = read_trace(trace_path(TRACE))
    assert trace.step_seconds == STEP_SECONDS
    rows = int((HISTORY_DAYS * DAY + BACKFILLED_AFTER_START) / STEP_SECONDS)
    points = [(base + row * STEP_SECONDS, float(value)) for row, value in enumerate(trace.values[:rows])]
    server.backfill([BackfillSeries(METRIC, {"job": "trace"}, points)])


def write_config(path: Path, *, start: float, wall_origin: float) -> Path:
    clock = {"source": "replay", "replay": {"start": start, "speed": SPEED, "wallOrigin": wall_origin}}
    path.write_text(yaml.safe_dump({"clock": clock}))
    return path


def _started(label: str, prometheus_url: str, logs: Path, config: Path, marks: list[str]) -> Recorder:
    marks.append(uuid.uuid4().hex)
    recorder = Recorder(label, start_daemon(prometheus_url, logs / f"{label}.log", marks[-1], config=config))
    recorder.start()
    return recorder


def _wait_until(
    clock: ReplayClock, virtual: float, recorders: list[Recorder], done: Callable[[], bool] | None = None
) -> None:
    """Sleep until the clock reads `virtual` (or `done()` holds), failing early if a daemon died."""
    while clock.now() < virtual and not (done and done()):
        for recorder in recorders:
            code = recorder.daemon.process.poll()
            assert code is None, f"{recorder.label} exited ({code}):\n{recorder.daemon.log.read_text()[-3000:]}"
            assert recorder.failure is None, f"poller of {recorder.label} failed: {recorder.failure!r}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_binaries()
    workdir = tmp_path_factory.mktemp("two-daemons")
    # Whole days, all in the past: the replay never reaches the head Prometheus writes now.
    base = math.floor(time.time() / DAY) * DAY - 6 * DAY
    start = base + HISTORY_DAYS * DAY
    server = PrometheusServer(workdir / "prometheus")
    backfill_trace(server, base=base)
    server.start()
    began = time.monotonic()
    wall_origin = time.time() + STARTUP_WALL_SECONDS
    clock = ReplayClock(start=start, speed=SPEED, wall_origin=wall_origin)
    config = write_config(workdir / "config.yaml", start=start, wall_origin=wall_origin)
    marks: list[str] = []
    recorders: list[Recorder] = []
    try:
        survivor = _started("daemon-a", server.url, workdir, config, marks)
        recorders.append(survivor)
        killed = _started("daemon-b", server.url, workdir, config, marks)
        recorders.append(killed)
        _wait_until(clock, start + KILL_AFTER, recorders)
        killed.stop()
        kill_hard(killed.daemon)
        leftovers = leftovers_after_exit(marks[-1])
        restarted = _started("daemon-b-restarted", server.url, workdir, config, marks)
        recorders.append(restarted)
        result = Run(start, survivor, killed, restarted, leftovers, wall_seconds=0.0)
        _wait_until(clock, start + RUN_AT_LEAST, [survivor, restarted])
        _wait_until(
            clock, start + RUN_AT_MOST, [survivor, restarted], done=lambda: result.compared_steps() >= STEPS_TO_COMPARE
        )
        for recorder in (survivor, restarted):
            recorder.stop()
        result.wall_seconds = time.monotonic() - began
        result.summary = result.describe()
        print(result.summary)
        yield result
    finally:
        for recorder in recorders:
            recorder.stop(check=False)
            if recorder.daemon.process.poll() is None:
                recorder.daemon.process.terminate()
                recorder.daemon.process.wait(timeout=30)
        for mark in marks:
            leftovers_after_exit(mark)
        server.stop()


def test_two_daemons_give_the_same_answer_at_every_step(run: Run) -> None:
    comparison = run.before_kill()
    assert len(comparison.steps) >= 0.25 * STEPS_TO_COMPARE, run.summary
    assert comparison.replica_differences == [], run.summary


def test_a_restarted_daemon_answers_as_the_survivor_from_its_first_servable_answer(run: Run) -> None:
    comparison = run.after_restart()
    assert run.leftovers == [], "the killed daemon left processes behind"
    assert len(comparison.steps) >= 0.25 * STEPS_TO_COMPARE, run.summary
    assert comparison.replica_differences == [], run.summary


def test_the_decisions_behind_the_answers_agree(run: Run) -> None:
    """Reason, reactive replicas, buffer and the forecast at the lead times too, not only the replicas."""
    assert run.before_kill().decision_differences == [], run.summary
    assert run.after_restart().decision_differences == [], run.summary


def test_a_virtual_day_is_compared_and_each_step_has_one_answer(run: Run) -> None:
    assert run.compared_steps() >= STEPS_TO_COMPARE, run.summary
    for recorder in (run.survivor, run.killed, run.restarted):
        assert recorder.changed == {}, run.summary
