"""The core's errors cross a process pool intact (the backtest's --jobs runs policies in workers)."""

from __future__ import annotations

import pickle

import pytest

from autoscaler.domain.errors import SpecError, TraceError


@pytest.mark.parametrize(
    "error", [SpecError("drainTime", "must be between 10s and 3600s"), TraceError(4, "not finite")]
)
def test_an_error_survives_pickling_with_its_fields_and_message(error: SpecError | TraceError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
