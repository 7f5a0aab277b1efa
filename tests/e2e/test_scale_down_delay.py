"""How long after a demand drop the first replica goes, on the real chain (issue 16, item 3).

Two Deployments serve the same replayed drop: the last hours of the Alibaba ServeGen
M-mid LLM trace, where traffic falls from about 2,400 to 1,100 requests/s (10-minute bins,
one bin per 10 s of wall time). Both ScaledObjects use our scaler with the same
``scaleDownStabilization``; they differ only in the HPA's own scale-down window:

- ``damped``: ``advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds: 0``,
  as deploy/examples/ set it, so the plan's damping is the only delay;
- ``stacked``: the HPA keeps a window of its own, as it does by default (300 s), on top.

Both windows are accelerated by the same factor: the plan's 60 s stands for its default
300 s and the HPA's 60 s for its default 300 s. For each Deployment the test times two
moments after the drop: the daemon's plan going below the replicas that the demand
before the drop needed, and the Deployment doing so. It prints both and asserts that the
plan's window acts on both (no lower plan sooner than the window), that without a window
of its own the HPA follows the plan at once, and that the HPA's window adds its length.
Measured figures: docs/deploy.md ("Scale-down: which window acts").

Run: ``.venv/bin/pytest -m e2e -s tests/e2e/test_scale_down_delay.py`` (docs/deploy.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from tests.e2e.replay import load_compressed_trace
from tests.e2e.serving_chain import (
    HPA_SYNC_PERIOD_S,
    WALL_STEP_S,
    Recorder,
    Sample,
    ServedTarget,
    ServingChain,
    completions_query,
    serving_chain,
)
from tests.e2e.serving_exporter import ServingParams
from tests.e2e.test_keda_chain import keda_binaries  # noqa: F401 - the fixture
from tests.harness.cluster import HarnessError
from tests.harness.keda import KedaBinaries

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TRACE = "servegen_mmid_rate"
DROP_SHARE = 0.6
"""The drop: the first live bin below this share of the bin before it."""
LIVE_FROM_BIN = 1991  # 12 bins (two trace hours) before the drop, for the chain to settle
HISTORY_BINS = 2 * 144  # two trace days of 10-minute bins
PARAMS = ServingParams(capacity_per_replica=4.0, service_seconds=2.0, patience_seconds=30.0)
REQUESTS_PER_SECOND_PER_UNIT = 0.01  # 2,400 requests/s of the trace: 24/s here, 7 replicas
PLAN_WINDOW_S = 60
PLAN_PERCENT_PER_MINUTE = 50
"""The default rate limit. Before `PlannerState.rate_floor` it never let a 10 s step go
down at all (8 x (1 - 50 % / 6) rounded back up to 8), and this test needed 100 %/min."""
HPA_WINDOW_S = 60
CHAIN_LATENCY_S = 15.0
"""From a lower plan to a removed replica with no window of the HPA's: KEDA's 2 s polling, the
HPA's 2 s sync and the recorder's 1 s samples, with margin for a loaded machine."""
MAX_WAIT_S = 300.0
"""After the drop: the plan's window, the HPA's, the forecast catching up and the chain's latency."""
DAMPED, STACKED = "damped", "stacked"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, keda_binaries: KedaBinaries) -> Iterator[ServingChain]:  # noqa: F811
    trace = load_compressed_trace(TRACE, bin_steps=1, wall_step_seconds=WALL_STEP_S)
    targets = [
        ServedTarget(
            deployment=name,
            trace=trace,
            live_start=LIVE_FROM_BIN,
            live_end=trace.values.size,
            history_bins=HISTORY_BINS,
            requests_per_second_per_unit=REQUESTS_PER_SECOND_PER_UNIT,
            params=PARAMS,
        )
        for name in (DAMPED, STACKED)
    ]
    try:
        with serving_chain(tmp_path_factory.mktemp("scale-down"), keda_binaries, targets) as started:
            yield started
    except HarnessError as error:
        pytest.fail(f"the chain failed to start: {error}", pytrace=False)


def drop_bin(rates: np.ndarray) -> int:
    """The live bin where demand drops, and the only one."""
    drops = [i for i in range(1, rates.size) if rates[i] < DROP_SHARE * rates[i - 1]]
    assert len(drops) == 1, f"expected one drop in the replay, found bins {drops}"
    return drops[0]


def first_below(
    samples: list[Sample], drop_at: float, baseline: int, read: Callable[[Sample], int | None]
) -> Sample | None:
    """The first sample after the drop whose ``read`` value is below ``baseline``."""
    return next((s for s in samples if s.at > drop_at and (value := read(s)) is not None and value < baseline), None)


def removed(sample: Sample) -> int:
    return sample.desired


def planned(sample: Sample) -> int | None:
    return sample.planned


def test_the_plans_window_is_the_only_scale_down_delay(chain: ServingChain) -> None:
    damped = chain.targets[DAMPED]
    drop = drop_bin(damped.live_rates)
    drop_at = chain.live_from + drop * WALL_STEP_S
    for name, hpa_window in ((DAMPED, 0), (STACKED, HPA_WINDOW_S)):
        chain.create_scaled_object(
            name,
            scale_down_stabilization_s=PLAN_WINDOW_S,
            hpa_scale_down_window_s=hpa_window,
            scale_down_percent_per_minute=PLAN_PERCENT_PER_MINUTE,
        )
    # The plan is never below the reactive answer, so no count below what the demand of the plan's
    # window before the drop needed can come from a plan made before the drop.
    before = damped.live_rates[max(drop - round(PLAN_WINDOW_S / WALL_STEP_S), 0) : drop]
    baseline = min(damped.replicas_for(float(rate)) for rate in before)
    deadline = drop_at + MAX_WAIT_S
    with Recorder(chain) as recorder:
        for name in (DAMPED, STACKED):
            chain.wait_until_driven(name)
        assert time.time() < drop_at - PLAN_WINDOW_S / 2, "the chain was not driving both targets before the drop"
        time.sleep(max(drop_at - time.time(), 0.0))
        while time.time() < deadline:
            if all(first_below(recorder.samples[n], drop_at, baseline, removed) for n in (DAMPED, STACKED)):
                break
            time.sleep(2 * HPA_SYNC_PERIOD_S)

    lines = [f"drop at bin {damped.live_start + drop}: {damped.live_rates[drop - 1]:.1f} -> "
             f"{damped.live_rates[drop]:.1f} requests/s, {baseline} replicas needed before it; "
             f"completions {completions_query(DAMPED)}"]  # fmt: skip
    plan_delay: dict[str, float] = {}
    hpa_delay: dict[str, float] = {}
    for name in (DAMPED, STACKED):
        samples = recorder.samples[name]
        around = [(round(s.at - drop_at), s.desired, s.planned) for s in samples if s.at > drop_at - 20]
        lines.append(f"{name}: (s after drop, desired, planned) {around}")
        plan_down = first_below(samples, drop_at, baseline, planned)
        removal = first_below(samples, drop_at, baseline, removed)
        assert plan_down is not None and removal is not None, "\n".join(lines)
        plan_delay[name], hpa_delay[name] = plan_down.at - drop_at, removal.at - plan_down.at
    total = {name: plan_delay[name] + hpa_delay[name] for name in plan_delay}
    print(
        f"first replica removed {total[DAMPED]:.0f} s after the drop with the plan's {PLAN_WINDOW_S} s window alone "
        f"(the plan went down after {plan_delay[DAMPED]:.0f} s, the HPA followed {hpa_delay[DAMPED]:.0f} s later); "
        f"{total[STACKED]:.0f} s with the HPA's {HPA_WINDOW_S} s window stacked on it "
        f"(plan {plan_delay[STACKED]:.0f} s, HPA {hpa_delay[STACKED]:.0f} s more)"
    )
    summary = "\n".join([*lines, f"plan {plan_delay}, HPA {hpa_delay}; recorder errors {recorder.errors[:3]}"])
    for name in (DAMPED, STACKED):  # the plan's damping acts on both
        assert plan_delay[name] >= PLAN_WINDOW_S - WALL_STEP_S, summary
    assert hpa_delay[DAMPED] <= CHAIN_LATENCY_S, summary  # and it is the only delay: the HPA follows at once
    assert hpa_delay[STACKED] >= HPA_WINDOW_S - CHAIN_LATENCY_S, summary  # which a window of the HPA's adds
