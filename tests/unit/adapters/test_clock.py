from __future__ import annotations

import time

import pytest

from autoscaler.adapters.clock import ReplayClock, ScaledClock
from autoscaler.daemon import settings_clock
from autoscaler.settings import validate_settings

START = 1_783_987_200.0


def test_replay_clocks_made_apart_share_one_timeline() -> None:
    """Two daemons, or one restarted later, given the same settings read the same virtual instant."""
    wall_origin = time.time() - 10.0
    first = ReplayClock(start=START, speed=100.0, wall_origin=wall_origin)
    time.sleep(0.05)
    restarted = ReplayClock(start=START, speed=100.0, wall_origin=wall_origin)
    before, reading, after = first.now(), restarted.now(), first.now()
    assert before <= reading <= after
    assert reading == pytest.approx(START + 1000.0, abs=100.0)  # 10 wall seconds in, not at start


def test_a_scaled_clock_starts_at_start_when_made() -> None:
    clock = ScaledClock(start=START, speed=1000.0)
    assert START <= clock.now() < START + 1000.0


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="speed must be positive"):
        ReplayClock(start=START, speed=0.0, wall_origin=0.0)


def test_the_daemon_builds_the_clock_the_settings_name() -> None:
    assert not isinstance(settings_clock(validate_settings({}).clock), ScaledClock)
    replay = {"source": "replay", "replay": {"start": START, "speed": 2.0, "wallOrigin": time.time()}}
    clock = settings_clock(validate_settings({"clock": replay}).clock)
    assert isinstance(clock, ReplayClock)
    assert clock.now() == pytest.approx(START, abs=10.0)
