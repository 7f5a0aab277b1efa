"""The cluster model every trace comparison (tests and benchmarks) replays on."""

from __future__ import annotations

from typing import Any

import numpy as np

from autoscaler.sim.backtest import BacktestConfig
from autoscaler.sim.trace import Trace

REPLICAS_AT_P95 = 20
"""A replica serves a twentieth of the trace's 95th percentile: about 20 replicas at a busy step."""


def reference_config(trace: Trace, **fields: Any) -> BacktestConfig:
    """Pods ready in 180 s, new nodes in 300 s, 4 pods a node; `fields` set the rest (model, coverage)."""
    return BacktestConfig(
        step_seconds=trace.step_seconds,
        capacity_per_replica=float(np.percentile(trace.values, 95)) / REPLICAS_AT_P95,
        pod_startup_seconds=180.0,
        node_startup_seconds=300.0,
        pods_per_node=4,
        **fields,
    )
