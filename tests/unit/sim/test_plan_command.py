"""`autoscaler plan --stdio`: the step protocol, its future-leak rule and its errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from autoscaler.commands.plan import ProtocolError, parse_metadata, serve

METADATA = {"capacityPerReplica": "10", "model": "naive", "step": "60s", "leadTime": "120s"}


def line(timestamp: float, ready: int, **signals: float | None) -> str:
    return json.dumps({"timestamp": timestamp, "ready_replicas": ready, "signals": signals})


def answers(lines: list[str], metadata: dict[str, str] = METADATA) -> list[dict[str, object]]:
    out = io.StringIO()
    serve(metadata, lines, out)
    return [json.loads(text) for text in out.getvalue().splitlines()]


def queue_trace(spike_from: int | None = None, steps: int = 40) -> list[str]:
    """Completions and a queue served by 4 replicas; from `spike_from` on, a different future."""
    lines = []
    for step in range(steps):
        surge = spike_from is not None and step >= spike_from
        completions = 40.0 if surge else 20.0 + 5.0 * (step % 4)
        waiting = 300.0 * (step - spike_from + 1) if surge and spike_from is not None else 0.0
        lines.append(line(60.0 * step, 4, completions=completions, waiting=waiting))
    return lines


def test_one_answer_per_line_with_the_documented_keys() -> None:
    result = answers(queue_trace())
    assert len(result) == 40
    assert set(result[0]) == {"timestamp", "replicas", "buffer_replicas", "demand", "reason"}
    assert result[0]["demand"] == 20.0
    assert any("forecast p95" in str(answer["reason"]) for answer in result[30:])


def test_the_answer_to_line_t_uses_lines_up_to_t_only() -> None:
    """Two runs that share 25 lines and then differ answer those 25 lines identically."""
    calm, surge = answers(queue_trace()), answers(queue_trace(spike_from=25))
    assert calm[:25] == surge[:25]
    assert calm[25:] != surge[25:]
    # and a prefix on its own answers as the full run did
    assert answers(queue_trace()[:30]) == calm[:30]


def test_null_is_not_observed_and_utilisation_needs_only_its_target() -> None:
    metadata = {"targetUtilization": "0.75", "model": "naive"}
    result = answers([line(0, 20, utilization=0.7), line(60, 20, utilization=None)], metadata)
    assert result[0]["demand"] == pytest.approx(14.0)
    assert result[0]["replicas"] == 20
    assert result[1]["demand"] is None
    assert result[1]["replicas"] == 20


def test_answers_stream_one_flushed_line_per_line() -> None:
    """The process answers line 1 before line 2 is written (a simulator waits on each answer)."""
    command = [sys.executable, "-m", "autoscaler", "plan", "--stdio", "--metadata", json.dumps(METADATA)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdin is not None and process.stdout is not None
        try:
            for step in range(3):
                process.stdin.write(line(60.0 * step, 2, arrivals=15.0) + "\n")
                process.stdin.flush()
                answer = json.loads(process.stdout.readline())
                assert answer["timestamp"] == 60.0 * step
                assert answer["replicas"] == 2
            process.stdin.close()
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()


BAD_LINES = [
    ("not JSON", "{", "line 2: Invalid JSON"),
    (
        "a missing key",
        json.dumps({"timestamp": 60, "signals": {"arrivals": 1}}),
        "line 2: ready_replicas: Field required",
    ),
    ("an unknown key", json.dumps({"timestamp": 60, "ready_replicas": 1, "signals": {}, "x": 1}), "line 2: x: Extra"),
    ("an unknown signal", line(60, 1, arrivals=1.0, queue=3.0), "line 2: signals.queue: Extra inputs"),
    ("utilisation above 1", line(60, 1, arrivals=1.0, utilization=1.5), "line 2: signals.utilization: Input should be"),
    ("a negative queue", line(60, 1, arrivals=1.0, waiting=-1.0), "line 2: signals.waiting: Input should be greater"),
    (
        "fractional replicas",
        line(60, 1, arrivals=1.0).replace('"ready_replicas": 1', '"ready_replicas": 1.5'),
        "line 2: ready_replicas",
    ),
    (
        "other signal keys than line 1",
        line(60, 1, completions=1.0),
        "line 2: signals: the keys must be those of line 1",
    ),
    ("a timestamp that does not increase", line(0, 1, arrivals=1.0), "line 2: timestamp: 0 does not increase"),
]


@pytest.mark.parametrize(("name", "bad", "message"), BAD_LINES, ids=[case[0] for case in BAD_LINES])
def test_a_malformed_line_names_the_line_and_the_field(name: str, bad: str, message: str) -> None:
    out = io.StringIO()
    with pytest.raises(ProtocolError) as raised:
        serve(METADATA, [line(0, 1, arrivals=1.0), bad, line(120, 1, arrivals=1.0)], out)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert len(out.getvalue().splitlines()) == 1  # line 1 was answered before line 2 failed


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ('{"query": "up", "capacityPerReplica": "1"}', "key 'query': not read by the step protocol"),
        ('{"capacityPerReplica": 10}', "--metadata: capacityPerReplica: Input should be a valid string"),
        ("[1]", "--metadata: Input should be an object"),
    ],
)
def test_bad_metadata_is_refused_before_any_line(metadata: str, message: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_metadata(metadata)
    assert message in str(raised.value)


def test_the_command_exits_2_with_one_line_on_stderr() -> None:
    command = [sys.executable, "-m", "autoscaler", "plan", "--stdio", "--metadata", json.dumps(METADATA)]
    stdin = line(0, 1, arrivals=1.0) + "\n" + line(60, 1, arrivals=-2.0) + "\n"
    completed = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "autoscaler plan: line 2: signals.arrivals: Input should be greater than or equal to 0"
    ]
    assert len(completed.stdout.splitlines()) == 1


def test_a_spec_error_from_metadata_names_the_key() -> None:
    with pytest.raises(ProtocolError) as raised:
        serve({"model": "naive"}, [line(0, 1, arrivals=1.0)], io.StringIO())
    assert "--metadata: scalerMetadata key 'capacityPerReplica': is required" in str(raised.value)
