"""The HTTP app over real-trace targets on loopback, as the browser and schemathesis tests drive it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from autoscaler.domain.snapshot import TargetSnapshot
from autoscaler.services.authn import Authenticator
from autoscaler.services.http_api import create_http_app
from autoscaler.services.telemetry import Telemetry
from tests.unit.services.test_http_api import TRACE_METADATA, engine_with_targets, serve, trace_target


@asynccontextmanager
async def serve_trace_targets(
    *targets: TargetSnapshot, authenticator: Authenticator | None = None
) -> AsyncIterator[str]:
    """Serve the app (with telemetry) over `targets` plus two more real-trace targets; yield its base URL.

    The two: the default chat trace at another capacity (so it gets a target of its own), and
    the NASA trace at 1-minute steps, so targets with different steps and lead times show together.
    """
    engine = engine_with_targets(
        *targets,
        trace_target(metadata={**TRACE_METADATA, "capacityPerReplica": "20"}),
        trace_target(
            namespace="web",
            name="nasa",
            trace="nasa_http_jul95.csv",
            metadata={**TRACE_METADATA, "step": "1m", "leadTime": "3m", "historyWindow": "1d"},
        ),
    )
    async with serve(create_http_app(engine, telemetry=Telemetry(engine), authenticator=authenticator)) as url:
        yield url
