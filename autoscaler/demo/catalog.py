"""The embedded demo: two bundled real traces, served as if Prometheus had them.

Each demo target is registered exactly as KEDA's GetMetricSpec would register it, with
the metadata printed by `autoscaler demo`, so a KEDA-style client that sends the same
metadata reaches the same target.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from autoscaler.adapters.replay import ReplaySource, ReplayTrace
from autoscaler.sim.trace import parse_trace

DEMO_ENDPOINT = "demo"


@dataclass(frozen=True, slots=True)
class DemoTarget:
    namespace: str
    name: str
    trace_file: str
    history_rows: int
    metadata: dict[str, str]

    @property
    def trace_name(self) -> str:
        return self.trace_file.removesuffix(".csv")


DEMO_TARGETS: tuple[DemoTarget, ...] = (
    DemoTarget(
        namespace="demo",
        name="llm-chat",
        trace_file="servegen_mmid_rate.csv",
        history_rows=3 * 144,  # three days of 10-minute steps: enough to learn the daily cycle
        metadata={
            "query": "replay:servegen_mmid_rate",
            "prometheus": DEMO_ENDPOINT,
            "capacityPerReplica": "100",
            "step": "10m",
            "leadTime": "10m",
            "nodeLeadTime": "10m",
            "podsPerNode": "4",
            "historyWindow": "7d",
            "targetCoverage": "0.95",
            "minReplicas": "1",
            "maxReplicas": "200",
            "maxBufferReplicas": "8",
            "scaleDownStabilization": "20m",
        },
    ),
    DemoTarget(
        namespace="demo",
        name="chat-burst",
        trace_file="azure_llm2023_conv_rate.csv",
        history_rows=90,  # 15 minutes of 10-second steps: a cold start that turns predictive
        metadata={
            "query": "replay:azure_llm2023_conv_rate",
            "prometheus": DEMO_ENDPOINT,
            "capacityPerReplica": "6",
            "step": "10s",
            "leadTime": "60s",
            "nodeLeadTime": "120s",
            "podsPerNode": "2",
            "historyWindow": "1h",
            "targetCoverage": "0.9",
            "minReplicas": "1",
            "maxReplicas": "50",
            "scaleDownStabilization": "120s",
        },
    ),
)


def load_demo_source(*, origin: float) -> ReplaySource:
    """Lay each bundled trace on the timeline so its `history_rows` precede `origin`."""
    traces = []
    for target in DEMO_TARGETS:
        text = resources.files("autoscaler.demo").joinpath(target.trace_file).read_text()
        trace = parse_trace(text.splitlines())
        traces.append(
            ReplayTrace(
                name=target.trace_name,
                values=trace.values,
                step_seconds=trace.step_seconds,
                origin=origin,
                offset_rows=target.history_rows,
            )
        )
    return ReplaySource(traces)
