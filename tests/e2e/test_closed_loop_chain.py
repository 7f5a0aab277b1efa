"""Closed loop on the real chain: our scaler reads symptoms that its own replicas shape.

The NASA trace's Tuesday-morning rise (11 July 1995, 06:52-08:12, 4-minute bins, one
bin per 10 s of wall time) offers requests to a Deployment on kwok GPU nodes. Its ready
pods, as the control plane reports them, serve a FIFO backlog (tests/e2e/serving_exporter.py)
and export vLLM's metrics per pod. Prometheus scrapes them; the daemon derives offered
demand from completions + waiting + running (conservation), counts the pods the sums
cover, reads the Deployment's replicas from the API server, and KEDA's HPA scales the
Deployment on its answer. Nothing outside the loop tells the scaler the demand.

Asserted over the spike: the replicas rise to what the peak needs, they do not run away
(at most twice the peak's need), the backlog drains by the end, and little demand is
lost to patience. A plot of the run is written to the test's tmp_path (its path is
printed); ``PA_UPDATE_DOC_IMAGES=1`` refreshes docs/images/closed-loop-chain.png.

Run: ``.venv/bin/pytest -m e2e -s tests/e2e/test_closed_loop_chain.py`` (docs/keda-chain.md).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.replay import load_compressed_trace
from tests.e2e.serving_chain import (
    HPA_SYNC_PERIOD_S,
    POD_READY_DELAY_S,
    WALL_STEP_S,
    Recorder,
    Sample,
    ServedTarget,
    ServingChain,
    serving_chain,
)
from tests.e2e.serving_exporter import ServingParams
from tests.e2e.test_keda_chain import keda_binaries  # noqa: F401 - the fixture
from tests.harness.cluster import HarnessError
from tests.harness.keda import KedaBinaries

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC_IMAGE = REPO_ROOT / "docs" / "images" / "closed-loop-chain.png"
UPDATE_DOC_IMAGE_ENV = "PA_UPDATE_DOC_IMAGES"

NAME = "chat"
TRACE = "nasa_http_jul95"
BIN_STEPS = 4  # 4-minute bins: a trace day is a wall hour
REPLAY_DAY = 10  # Tuesday 11 July 1995
LIVE_FROM_HOUR = 6 + 52 / 60
LIVE_TO_HOUR = 8 + 12 / 60
HISTORY_DAYS = 2
PARAMS = ServingParams(capacity_per_replica=3.0, service_seconds=2.0, patience_seconds=30.0)
SCALE_DOWN_STABILIZATION_S = 60
RUNAWAY_FACTOR = 2.0
"""A runaway grows without bound (issue 14 measured 13-99x the oracle's nodes on a
utilisation). Headroom is not one: the plan's p95 plus the calibrator's offset after the
spike held 15-17 replicas where the peak needs 10 in three runs, so 1.5x failed one of
them on headroom the planner means to keep."""
LOST_SHARE_MAX = 0.05
"""Lost to patience over the replay. The rise needs 7 replicas within a minute of wall
time from 4; each step up costs a pod start, the HPA sync and a rate window first."""


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, keda_binaries: KedaBinaries) -> Iterator[ServingChain]:  # noqa: F811
    trace = load_compressed_trace(TRACE, bin_steps=BIN_STEPS, wall_step_seconds=WALL_STEP_S)
    target = ServedTarget(
        deployment=NAME,
        trace=trace,
        live_start=trace.index(REPLAY_DAY, LIVE_FROM_HOUR),
        live_end=trace.index(REPLAY_DAY, LIVE_TO_HOUR),
        history_bins=HISTORY_DAYS * trace.steps_per_day,
        requests_per_second_per_unit=1 / WALL_STEP_S,  # a bin's requests arrive within its 10 s
        params=PARAMS,
    )
    try:
        with serving_chain(tmp_path_factory.mktemp("closed-loop"), keda_binaries, [target]) as started:
            yield started
    except HarnessError as error:
        pytest.fail(f"the chain failed to start: {error}", pytrace=False)


def test_the_loop_drains_the_backlog_of_a_spike_without_running_away(chain: ServingChain, tmp_path: Path) -> None:
    target = chain.targets[NAME]
    live_end = chain.live_end(NAME)
    chain.create_scaled_object(NAME, scale_down_stabilization_s=SCALE_DOWN_STABILIZATION_S, hpa_scale_down_window_s=0)
    with Recorder(chain) as recorder:
        chain.wait_until_driven(NAME)
        driven_at = time.time()
        time.sleep(max(live_end - time.time(), 0.0) + POD_READY_DELAY_S + 3 * HPA_SYNC_PERIOD_S)
    samples = recorder.samples[NAME]
    live = [s for s in samples if chain.live_from <= s.at <= live_end]
    driven = [s for s in samples if s.at >= driven_at]  # to the end: the last bin holds after the replay
    last = samples[-1]

    needed = target.replicas_for(float(target.live_rates.max()))
    arrived = last.totals.arrived - live[0].totals.arrived
    lost = last.totals.abandoned - live[0].totals.abandoned
    peak_backlog = max(live, key=lambda s: s.backlog)
    drained = next((s for s in samples if s.at > peak_backlog.at and s.backlog < 1.0), None)
    plot = _write_plot(chain, samples, driven_at, tmp_path / "closed-loop-chain.png")
    summary = (
        f"peak need {needed} replicas; desired max {max(s.desired for s in driven)}, ready max "
        f"{max(s.ready for s in driven)}; backlog peak {peak_backlog.backlog:.1f} at "
        f"+{peak_backlog.at - chain.live_from:.0f}s, below 1 request "
        f"{'never' if drained is None else f'{drained.at - peak_backlog.at:.0f}s later'}, "
        f"{last.backlog:.2f} at the end; lost {lost:.1f} of {arrived:.0f} arrived ({lost / arrived:.2%}); "
        f"driven from +{driven_at - chain.live_from:.0f}s; plot {plot}; recorder errors {recorder.errors[:3]}; "
        f"exporter read errors {chain.exporter.read_errors[:3]}"
    )
    print(summary)

    assert max(s.ready for s in driven) >= needed - 1, summary  # the loop followed the spike up
    assert max(s.desired for s in driven) <= math.floor(RUNAWAY_FACTOR * needed), summary  # and did not run away
    assert drained is not None and last.backlog < 1.0, summary
    assert lost <= LOST_SHARE_MAX * arrived, summary


def _write_plot(chain: ServingChain, samples: list[Sample], driven_at: float, path: Path) -> Path:
    import matplotlib  # noqa: PLC0415 - a test-only dependency

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    target = chain.targets[NAME]
    speedup = target.trace.speedup

    def trace_minutes(at: float) -> float:
        return (at - chain.live_from) * speedup / 60.0

    xs = [trace_minutes(s.at) for s in samples]
    capacity = target.params.capacity_per_replica
    figure, (load, queue, replicas) = plt.subplots(3, 1, figsize=(9, 8), sharex=True, height_ratios=[3, 2, 2])
    load.step(xs, [s.arrival_rate for s in samples], where="post", color="black", label="offered (trace)")
    load.plot(xs, [s.ready * capacity for s in samples], color="tab:blue", label="capacity of the ready pods")
    completions = [  # over 5 samples: the recorder and the exporter tick on their own clocks
        (b.totals.served - a.totals.served) / (b.at - a.at) for a, b in zip(samples, samples[5:], strict=False)
    ]
    load.plot(xs[5:], completions, color="tab:green", linewidth=0.8, label="completions")
    load.set_ylabel("requests / wall second")
    load.legend(loc="upper left", fontsize=8)
    load.set_title(
        f"{target.trace.name}, 11 July 1995 from 06:52, replayed {speedup:.0f}x: serving pods -> Prometheus -> "
        "our scaler -> KEDA -> HPA -> kwok pods",
        fontsize=9,
    )
    queue.plot(xs, [s.backlog for s in samples], color="tab:red", label="backlog (waiting, all pods)")
    queue.plot(xs, [s.totals.abandoned - samples[0].totals.abandoned for s in samples], color="tab:gray",
               linestyle="--", label="gave up (cumulative)")  # fmt: skip
    queue.set_ylabel("requests")
    queue.legend(loc="upper left", fontsize=8)
    replicas.step(xs, [s.planned if s.planned is not None else float("nan") for s in samples], where="post",
                  color="tab:blue", linestyle="--", label="planned (daemon)")  # fmt: skip
    replicas.step(xs, [s.desired for s in samples], where="post", color="tab:orange", label="desired (HPA)")
    replicas.step(xs, [s.ready for s in samples], where="post", color="tab:blue", label="ready")
    replicas.set_ylabel("replicas")
    replicas.set_xlabel(f"trace minutes since the replay started (1 trace minute = {60 / speedup:.1f} s wall)")
    replicas.legend(loc="upper left", fontsize=8)
    for axis in (load, queue, replicas):
        axis.axvline(trace_minutes(driven_at), color="grey", linestyle=":", linewidth=1)
    replicas.annotate("KEDA drives", (trace_minutes(driven_at), 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    if os.environ.get(UPDATE_DOC_IMAGE_ENV) == "1":
        figure.savefig(DOC_IMAGE, dpi=70)
    plt.close(figure)
    return path
