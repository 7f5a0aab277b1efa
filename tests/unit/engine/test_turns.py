"""Turns: CPU-bound steps one per loop iteration, in order, with the loop free in between."""

from __future__ import annotations

import asyncio

import pytest

from autoscaler.domain.spec import target_key
from autoscaler.engine.engine import collection_phase
from autoscaler.engine.turns import Turns
from tests.unit.services.fake_engine import metadata


async def test_io_is_serviced_between_every_two_steps_of_a_wave() -> None:
    turns, steps_between_polls, steps = Turns(), list[int](), [0]

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])

    async def step() -> None:
        async with turns.turn():
            steps[0] += 1

    async def poll_socket() -> None:
        """A client whose every answer needs the loop to read the socket, as a gRPC call does."""
        while steps[0] < 200:
            before = steps[0]
            writer.write(b"x")
            await reader.readexactly(1)
            steps_between_polls.append(steps[0] - before)

    await asyncio.gather(poll_socket(), *(step() for _ in range(200)))
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    assert steps[0] == 200
    assert max(steps_between_polls) <= 3, steps_between_polls


async def test_turns_are_granted_in_arrival_order() -> None:
    turns, order = Turns(), list[int]()

    async def step(index: int) -> None:
        async with turns.turn():
            order.append(index)

    await asyncio.gather(*(step(index) for index in range(20)))
    assert order == list(range(20))
    assert len(turns) == 0


async def test_a_cancelled_waiter_does_not_stall_the_others() -> None:
    turns, done = Turns(), list[str]()
    release = asyncio.Event()

    async def holder() -> None:
        async with turns.turn():
            await release.wait()

    async def step(name: str) -> None:
        async with turns.turn():
            done.append(name)

    holding = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(step(name)) for name in ("a", "b", "c")]
    await asyncio.sleep(0.01)
    waiting[1].cancel()
    release.set()
    await holding
    await asyncio.gather(waiting[0], waiting[2])
    assert done == ["a", "c"]
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]


async def test_a_task_cancelled_after_its_turn_was_granted_passes_the_turn_on() -> None:
    turns, done = Turns(), list[str]()

    async def step(name: str) -> None:
        async with turns.turn():
            done.append(name)

    first = asyncio.create_task(step("first"))
    second = asyncio.create_task(step("second"))
    await asyncio.sleep(0)  # both queued; the first turn is granted on the next iteration
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert done in (["second"], ["first", "second"])


@pytest.mark.parametrize(("step", "spread"), [(60.0, 10.0), (10.0, 2.0), (3600.0, 10.0)])
def test_collection_phases_spread_targets_over_the_start_of_a_step(step: float, spread: float) -> None:
    keys = [target_key("ns", f"target-{index}", metadata()) for index in range(500)]
    phases = [collection_phase(key, step) for key in keys]
    assert all(0.0 <= phase < spread for phase in phases)
    assert max(phases) - min(phases) > 0.8 * spread  # spread out, not bunched
    assert collection_phase(keys[0], step) == phases[0]  # fixed per target
