"""Hostile scalerMetadata: `parse_spec` answers SpecError or a valid spec, quickly.

Any other exception would surface in the gRPC layer as INTERNAL for one user's typo; a
slow parse would stall every handler, since the resolver parses on the event loop.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.domain.errors import SpecError
from autoscaler.domain.presets import PRESETS
from autoscaler.domain.spec import KEYS, MAX_METADATA_KEYS, MAX_METADATA_VALUE, ScalerSpec, parse_spec

KEY_NAMES = [key.name for key in KEYS]
# Values near the valid ones reach the range and cross-key checks, not only the type checks.
NUMBERS_AND_DURATIONS = ["0", "-1", "1", "1e308", "1e309", "nan", "inf", "-inf", "0x10", "1_000", "٣", "90"]
DURATIONS = ["10s", "0s", "1h", "35d", "36d", "99999999999999999999d", "1.5m", " 60s "]
WORDS = ["auto", "shadow", "active", "load", "utilization", "default", "Default", "vllm-waiting", "sum(x)"]
ODD = ["", " ", "a" * 64, 'model_name="m1"', 'a="\\"', "\x00", "\u202e", "\ud7ff"]
NEAR_VALID = st.sampled_from([*NUMBERS_AND_DURATIONS, *DURATIONS, *WORDS, *ODD, *sorted(PRESETS)])
VALUES = st.one_of(NEAR_VALID, st.text(max_size=64), st.text(alphabet="0123456789.smhd e+-", max_size=12))
METADATA = st.one_of(
    st.dictionaries(st.sampled_from(KEY_NAMES), VALUES, max_size=len(KEY_NAMES)),
    st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=8),
    st.dictionaries(st.sampled_from(KEY_NAMES), VALUES, min_size=1).map(
        lambda metadata: {**metadata, "capacityPerReplica": metadata.get("capacityPerReplica", "10")}
    ),
)
# One parse must stay far below a KEDA call's budget even on a loaded CI machine.
PARSE_BUDGET_SECONDS = 0.05


def parse_or_spec_error(metadata: dict[str, str]) -> ScalerSpec | None:
    started = time.perf_counter()
    try:
        return parse_spec(metadata)
    except SpecError as error:
        assert error.key in metadata or error.key in KEY_NAMES or error.key == "scalerMetadata", error
        return None
    finally:
        assert time.perf_counter() - started < PARSE_BUDGET_SECONDS, metadata


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(METADATA)
def test_arbitrary_metadata_gives_spec_error_or_a_valid_spec(metadata: dict[str, str]) -> None:
    spec = parse_or_spec_error(metadata)
    if spec is not None:
        assert 0 <= spec.min_replicas <= spec.max_replicas <= 10_000
        assert spec.step_seconds >= 10 and spec.stale_after_seconds >= spec.step_seconds
        assert spec.capacity_per_replica > 0


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({f"k{index}": "1" for index in range(MAX_METADATA_KEYS + 1)}, "scalerMetadata"),
        ({"query": "x" * (MAX_METADATA_VALUE + 1), "capacityPerReplica": "1"}, "query"),
        (
            {"preset": "vllm-waiting", "presetSelector": 'a="' + "\\" * 4000, "capacityPerReplica": "1"},
            "presetSelector",
        ),
        ({"preset": "vllm-waiting", "presetSelector": "a=" * 2000, "capacityPerReplica": "1"}, "presetSelector"),
        ({"query": "x", "capacityPerReplica": "9" * 4000}, "capacityPerReplica"),
        ({"query": "x", "capacityPerReplica": "1", "step": "9" * 4000 + "s"}, "step"),
        ({"query": "x", "capacityPerReplica": "1", "minReplicas": "9" * 4000}, "minReplicas"),
    ],
    ids=[
        "too-many-keys",
        "long-value",
        "selector-backslashes",
        "selector-repeats",
        "huge-number",
        "huge-duration",
        "huge-integer",
    ],
)
def test_oversized_metadata_is_refused_quickly(metadata: dict[str, str], key: str) -> None:
    with pytest.raises(SpecError) as raised:
        started = time.perf_counter()
        parse_spec(metadata)
    assert time.perf_counter() - started < PARSE_BUDGET_SECONDS
    assert raised.value.key == key
