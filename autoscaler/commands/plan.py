"""`autoscaler plan --stdio`: the step protocol (docs/step-protocol.md, version 1).

An outside simulator drives the daemon's planner in closed loop: one JSON object per
line on stdin (a step's signals and ready replicas), one JSON line out per line in,
flushed at once. The answer to line t uses lines 1..t only. A malformed line ends the
run with a one-line error on stderr naming the line, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from typing import Annotated, TextIO

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError

from autoscaler.commands.argtypes import EXIT_USAGE
from autoscaler.domain.errors import SpecError
from autoscaler.domain.signals import ReplicaCounts, SignalKind, StepSignals
from autoscaler.domain.spec import SIGNAL_KEYS, ScalerSpec, parse_spec
from autoscaler.planner.pipeline import TargetPipeline

PROTOCOL_VERSION = 1
# Keys a step-protocol target cannot carry: the signals and replicas come on each line.
STEP_FED_KEYS = frozenset(
    {"query", "preset", "presetSelector", "prometheus", "replicaSource", "replicasQuery", "workloadKind"}
    | set(SIGNAL_KEYS.values())
)
Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class StepSignalValues(BaseModel):
    """`signals` of one line: the keys present decide the derivation; null is not observed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arrivals: Rate | None = None
    completions: Rate | None = None
    waiting: Count | None = None
    running: Count | None = None
    utilization: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None


class StepLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: Annotated[float, Field(allow_inf_nan=False)]
    ready_replicas: Annotated[StrictInt, Field(ge=0)]
    signals: StepSignalValues

    def kinds(self) -> frozenset[SignalKind]:
        return frozenset(SignalKind(name) for name in self.signals.model_fields_set)

    def step_signals(self) -> StepSignals:
        values = {
            SignalKind(name): math.nan if (value := getattr(self.signals, name)) is None else float(value)
            for name in self.signals.model_fields_set
        }
        return StepSignals(timestamp=self.timestamp, values=values, replicas=ReplicaCounts(ready=self.ready_replicas))


METADATA = TypeAdapter(dict[str, str])


class ProtocolError(Exception):
    """A line or the metadata is malformed: one line on stderr, exit code 2."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="drive the planner one step per JSON line (the step protocol)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stdio", action="store_true", required=True, help="read steps on stdin, answer on stdout")
    parser.add_argument("--metadata", required=True, metavar="JSON", help="scalerMetadata as a JSON object of strings")


def parse_metadata(text: str) -> dict[str, str]:
    try:
        metadata = METADATA.validate_json(text)
    except ValidationError as error:
        raise ProtocolError(f"--metadata: {_first_error(error)}") from None
    for key in metadata:
        if key in STEP_FED_KEYS:
            raise ProtocolError(
                f"--metadata: scalerMetadata key {key!r}: not read by the step protocol, "
                "whose signals and ready replicas come on each line"
            )
    return metadata


def spec_for(metadata: dict[str, str], kinds: frozenset[SignalKind]) -> ScalerSpec:
    """The target the first line describes: one signal per key it carries."""
    full = dict(metadata)
    for kind in kinds:
        full[SIGNAL_KEYS[kind]] = f"step protocol {kind.value}"
    if SignalKind.UTILIZATION in kinds:
        full["replicaSource"] = "prometheus"  # ready replicas come on each line, as a query's answer would
        full["replicasQuery"] = "step protocol ready_replicas"
    return parse_spec(full)


def _first_error(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def parse_line(text: str, number: int) -> StepLine:
    try:
        return StepLine.model_validate_json(text)
    except ValidationError as error:
        raise ProtocolError(f"line {number}: {_first_error(error)}") from None


def _number_or_null(value: float) -> float | None:
    return value if math.isfinite(value) else None


def serve(metadata: dict[str, str], lines: Iterable[str], out: TextIO) -> None:
    """Answer each line as it arrives; ProtocolError names the first bad line."""
    pipeline: TargetPipeline | None = None
    first_kinds: frozenset[SignalKind] = frozenset()
    previous_timestamp = -math.inf
    for number, text in enumerate(lines, start=1):
        line = parse_line(text, number)
        if pipeline is None:
            first_kinds = line.kinds()
            if not first_kinds:
                raise ProtocolError(f"line {number}: signals: at least one signal is required")
            try:
                pipeline = TargetPipeline(spec_for(metadata, first_kinds))
            except SpecError as error:
                raise ProtocolError(f"--metadata: {error}") from None
        elif line.kinds() != first_kinds:
            expected = ", ".join(sorted(first_kinds))
            raise ProtocolError(f"line {number}: signals: the keys must be those of line 1 ({expected})")
        if line.timestamp <= previous_timestamp:
            raise ProtocolError(f"line {number}: timestamp: {line.timestamp:g} does not increase")
        previous_timestamp = line.timestamp
        pipeline.observe_step(line.step_signals())
        pipeline.refit_if_due()
        decision = pipeline.decide(line.timestamp, observed_replicas=ReplicaCounts(ready=line.ready_replicas))
        estimate = pipeline.demand_estimate
        answer = {
            "timestamp": line.timestamp,
            "replicas": decision.replicas,
            "buffer_replicas": decision.buffer_replicas,
            "demand": None if estimate is None else _number_or_null(estimate.value),
            "reason": decision.reason,
        }
        out.write(json.dumps(answer) + "\n")
        out.flush()


def run(args: argparse.Namespace) -> int:
    try:
        serve(parse_metadata(args.metadata), sys.stdin, sys.stdout)
    except ProtocolError as error:
        print(f"autoscaler plan: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0
