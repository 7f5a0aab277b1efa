"""Two engines on one data source give one answer per step, and so does one restarted.

Each engine runs on its own virtual clock (started a few milliseconds apart), refits in
its own executor, and one of them is stopped and replaced by a fresh engine mid-run,
which warm-starts by replaying the history. Their decisions are compared step by step.
The same holds on the real Prometheus, with daemons in their own processes:
tests/integration/test_two_daemons.py.
"""

from __future__ import annotations

import asyncio

from autoscaler.adapters.clock import ScaledClock
from autoscaler.adapters.replay import ReplaySource, ReplayTrace
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.domain.types import Decision
from autoscaler.engine.engine import Engine, EngineSettings
from autoscaler.sim.trace import parse_trace
from tests.traces import trace_path
from tests.unit.engine.test_engine import METADATA as ENGINE_METADATA
from tests.unit.engine.test_engine import SPEED

ORIGIN = 1_700_006_400.0  # a day boundary
HISTORY_ROWS = 1440
METADATA = {**ENGINE_METADATA, "historyWindow": "7d", "model": "ets"}  # all the data inside the window
KEY = target_key("web", "nasa-108", METADATA)
"""A key whose daily rebuild boundary falls 54 virtual minutes after ORIGIN: both engines
rebuild the target's state by replay while they are compared."""


class Recorder:
    """One engine and the decision it published for each step it was seen to decide."""

    def __init__(self, source: ReplaySource) -> None:
        self.engine = Engine(
            sources={"replay": source},
            clock=ScaledClock(start=ORIGIN, speed=SPEED),
            fit_executor=None,
            settings=EngineSettings(tick_seconds=0.005),
        )
        self.decisions: dict[float, Decision] = {}

    async def start(self) -> None:
        await self.engine.start()
        self.engine.ensure_target(KEY, parse_spec(METADATA))

    def poll(self) -> None:
        """The engine's newest decision and its step, set together (the snapshot follows a tick later)."""
        runtime = self.engine._targets.get(KEY)
        if runtime is not None and runtime.decision is not None and runtime.decided_at is not None:
            self.decisions.setdefault(runtime.decided_at, runtime.decision)


async def record(recorders: list[Recorder], wall_seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + wall_seconds
    while asyncio.get_running_loop().time() < deadline:
        for recorder in recorders:
            recorder.poll()
        await asyncio.sleep(0.002)


def compared(first: Recorder, second: Recorder, *, after: float = 0.0) -> int:
    shared = sorted(step for step in first.decisions.keys() & second.decisions.keys() if step >= after)
    for step in shared:
        assert first.decisions[step] == second.decisions[step], f"answers differ at step {step:.0f}"
    return len(shared)


def _source() -> ReplaySource:
    values = parse_trace(trace_path("nasa_http_jul95").read_text().splitlines()).values
    return ReplaySource(
        [ReplayTrace(name="nasa", values=values, step_seconds=60.0, origin=ORIGIN, offset_rows=HISTORY_ROWS)]
    )


async def test_two_engines_and_a_restarted_one_give_one_answer_per_step() -> None:
    source = _source()
    survivor, other = Recorder(source), Recorder(source)
    await survivor.start()
    await other.start()
    try:
        await survivor.engine.wait_for_target(KEY, timeout=30)
        warm_started = survivor.engine._targets[KEY].rebuilt_boundary
        await record([survivor, other], wall_seconds=12.0)  # two virtual hours
        assert compared(survivor, other) >= 60
        rebuilt = survivor.engine._targets[KEY].rebuilt_boundary
        assert warm_started is not None and rebuilt == warm_started + 86400.0  # one daily rebuild since
        await other.engine.stop()
        restarted = Recorder(source)  # a fresh process: its warm start replays the history
        await restarted.start()
        try:
            await record([survivor, restarted], wall_seconds=12.0)
            first_answer = min(restarted.decisions)
            assert compared(survivor, restarted, after=first_answer) >= 60
        finally:
            await restarted.engine.stop()
    finally:
        await survivor.engine.stop()
