"""How late the event loop wakes while a fit worker is busy: SCHED_IDLE against a niceness.

    nice -n 10 .venv/bin/python -m tests.bench.bench_fit_priority [--rounds 8] [--seconds 6] [--niceness 10]

A `FitPool` worker spins for the whole window, once as the daemon starts it (SCHED_IDLE)
and once `--niceness` nicer than this process, alternating in each round so that the
load other processes put on the machine falls on both alike. A second busy process at
this process's own priority stands in for the load generator of bench_grpc_load, so
both of a 2-core machine's cores are wanted, as while a fleet's first fits run. The
event loop meanwhile sleeps 1 ms at a time; the table gives how late each wake-up came
(p50, p99, p99.9) per round and arm, and the machine's load average before each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from autoscaler.engine.fit_pool import FitPool

TICK_SECONDS = 0.001


def spin(seconds: float) -> None:
    """Keep one core busy for `seconds`, as a fit does."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def wake_lateness_ms(seconds: float) -> list[float]:
    """How late each of the loop's 1 ms sleeps ended, in milliseconds, sorted."""
    late = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        due = time.monotonic() + TICK_SECONDS
        await asyncio.sleep(TICK_SECONDS)
        late.append((time.monotonic() - due) * 1000.0)
    return sorted(late)


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_window(pool: FitPool, seconds: float) -> list[float]:
    loop = asyncio.get_running_loop()
    peer = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the load generator's share
    try:
        fit = loop.run_in_executor(pool, spin, seconds + 1.0)
        await asyncio.sleep(0.5)  # both busy before the window opens
        late = await wake_lateness_ms(seconds)
        await fit
        return late
    finally:
        peer.kill()
        peer.wait()


async def run(args: argparse.Namespace) -> None:
    arms = {"SCHED_IDLE": FitPool(max_workers=1), f"nice +{args.niceness}": FitPool(1, niceness=args.niceness)}
    tails: dict[str, list[tuple[float, float]]] = {arm: [] for arm in arms}
    print(f"{'round':>5} {'fit worker':<11} {'load 1m':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'wakes':>6}")
    try:
        for pool in arms.values():  # start each worker before any window
            await asyncio.get_running_loop().run_in_executor(pool, spin, 0.0)
        for round_index in range(args.rounds):
            order = list(arms) if round_index % 2 == 0 else list(reversed(arms))
            for arm in order:
                load = os.getloadavg()[0]
                late = await one_window(arms[arm], args.seconds)
                tails[arm].append((quantile(late, 0.99), quantile(late, 0.999)))
                print(
                    f"{round_index:>5} {arm:<11} {load:>8.2f} {quantile(late, 0.5):>8.2f} "
                    f"{quantile(late, 0.99):>8.2f} {quantile(late, 0.999):>9.2f} {len(late):>6}",
                    flush=True,
                )
    finally:
        for pool in arms.values():
            pool.shutdown(wait=False, cancel_futures=True)
    for arm, values in tails.items():
        p99, p999 = (statistics.median(column) for column in zip(*values, strict=True))
        print(f"{arm}: median over {len(values)} rounds: p99 {p99:.2f} ms, p99.9 {p999:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="each window's length")
    parser.add_argument("--niceness", type=int, default=10, help="the other arm's fit worker: this much nicer")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
