"""The adapter's data policy for every answer shape, including ones Prometheus never sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from autoscaler.adapters.prometheus import (
    PrometheusClient,
    PrometheusDataError,
    PrometheusEndpoint,
    PrometheusError,
    PrometheusQueryError,
    Sample,
)
from tests.unit.adapters.scripted_server import Answer, ScriptedServer, success

AT = 1_700_000_000.0


def _client(server: ScriptedServer) -> PrometheusClient:
    return PrometheusClient(PrometheusEndpoint("scripted", server.url, retries=0))


def _raw(body: Any, status: int = 200) -> Answer:
    return Answer(status=status, body=body if isinstance(body, bytes) else json.dumps(body).encode())


def _series(value: Any, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": value}


# (case, answer, expected Sample/None, or the exception type and a fragment of its message)
INSTANT_CASES: list[tuple[str, Answer, Sample | tuple[type[PrometheusError], str] | None]] = [
    ("empty vector is missing", success("vector", []), None),
    ("one series", success("vector", [_series([AT, "5.5"], pod="a")]), Sample(5.5, AT)),
    ("integer timestamp", success("vector", [_series([1700000000, "1"])]), Sample(1.0, AT)),
    ("NaN is missing", success("vector", [_series([AT, "NaN"])]), None),
    ("+Inf is missing", success("vector", [_series([AT, "+Inf"])]), None),
    ("-Inf is missing", success("vector", [_series([AT, "-Inf"])]), None),
    ("scalar", success("scalar", [AT, "2"]), Sample(2.0, AT)),
    ("NaN scalar is missing", success("scalar", [AT, "NaN"]), None),
    ("two series", success("vector", [_series([AT, "1"], pod="a"), _series([AT, "2"], pod="b")]),
     (PrometheusDataError, 'returned 2 series, exactly one is required: {pod="a"}, {pod="b"}')),
    ("many series are truncated", success("vector", [_series([AT, "1"], pod=str(i)) for i in range(9)]),
     (PrometheusDataError, 'returned 9 series, exactly one is required: {pod="0"}, {pod="1"}, {pod="2"} and 6 more')),
    ("string", success("string", [AT, "hello"]), (PrometheusDataError, "returned a string")),
    ("matrix", success("matrix", [{"metric": {}, "values": [[AT, "1"]]}]), (PrometheusDataError, "range vector")),
    ("unknown type", success("histogram", []), (PrometheusDataError, "unknown result type 'histogram'")),
    ("not JSON", _raw(b"<html>proxy error</html>"), (PrometheusDataError, "answer is not JSON: '<html>proxy")),
    ("JSON list", _raw([]), (PrometheusDataError, "not a success envelope")),
    ("no data", _raw({"status": "success"}), (PrometheusDataError, "no data.resultType")),
    ("no result", _raw({"status": "success", "data": {"resultType": "vector"}}), (PrometheusDataError, "no data.")),
    ("result not a list", success("vector", {"a": 1}), (PrometheusDataError, "not a list of series")),
    ("series not an object", success("vector", [[AT, "1"]]), (PrometheusDataError, "not a list of series")),
    ("series without value", success("vector", [{"metric": {}}]), (PrometheusDataError, "not [timestamp, value]")),
    ("value too short", success("vector", [_series([AT])]), (PrometheusDataError, "not [timestamp, value]")),
    ("value as number", success("vector", [_series([AT, 5])]), (PrometheusDataError, "not [number, string]")),
    ("timestamp as string", success("vector", [_series(["x", "1"])]), (PrometheusDataError, "not [number, string]")),
    ("timestamp as bool", success("vector", [_series([True, "1"])]), (PrometheusDataError, "not [number, string]")),
    ("value not a number", success("vector", [_series([AT, "lots"])]), (PrometheusDataError, "'lots' is not a number")),
    ("status error on 200", _raw({"status": "error", "errorType": "internal", "error": "boom"}),
     (PrometheusQueryError, "(internal, HTTP 200): boom")),
    ("bad_data", _raw({"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400),
     (PrometheusQueryError, "(bad_data, HTTP 400): parse error")),
    ("execution", _raw({"status": "error", "errorType": "execution", "error": "many-to-many"}, status=422),
     (PrometheusQueryError, "(execution, HTTP 422): many-to-many")),
    ("plain 404", _raw(b"404 page not found", status=404), (PrometheusQueryError, "(http_404, HTTP 404): '404 page")),
    ("redirect", Answer(status=302, headers={"Location": "http://elsewhere/"}), (PrometheusDataError, "HTTP 302")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "expected"), [case[1:] for case in INSTANT_CASES], ids=[c[0] for c in INSTANT_CASES]
)
async def test_instant_policy(
    scripted_server: ScriptedServer,
    answer: Answer,
    expected: Sample | tuple[type[PrometheusError], str] | None,
) -> None:
    scripted_server.answer_in_turn(answer)
    async with _client(scripted_server) as client:
        if isinstance(expected, tuple):
            error_type, fragment = expected
            with pytest.raises(error_type) as raised:
                await client.instant("my_query", at=AT)
            assert fragment in str(raised.value)
            assert str(raised.value).startswith("prometheus endpoint 'scripted': query 'my_query'")
        else:
            assert await client.instant("my_query", at=AT) == expected
    assert len(scripted_server.received) == 1  # none of these is retried


def _matrix(*values: list[Any]) -> Answer:
    return success("matrix", [{"metric": {"pod": str(index)}, "values": v} for index, v in enumerate(values)])


RANGE_CASES: list[tuple[str, Answer, list[tuple[float, float]] | tuple[type[PrometheusError], str]]] = [
    ("empty matrix is missing", _matrix(), []),
    ("one series", _matrix([[AT, "1"], [AT + 60, "2"]]), [(AT, 1.0), (AT + 60, 2.0)]),
    ("NaN and Inf points dropped", _matrix([[AT, "1"], [AT + 60, "NaN"], [AT + 120, "+Inf"], [AT + 180, "4"]]),
     [(AT, 1.0), (AT + 180, 4.0)]),
    ("two series", _matrix([[AT, "1"]], [[AT, "2"]]), (PrometheusDataError, "returned 2 series")),
    ("vector", success("vector", []), (PrometheusDataError, "returned 'vector', not a matrix")),
    ("no values", success("matrix", [{"metric": {}}]), (PrometheusDataError, "no 'values' list")),
    ("more points than asked", _matrix([[AT + 60 * i, "1"] for i in range(12)]),
     (PrometheusDataError, "12 points returned where 11 were asked")),
    ("bad point", _matrix([[AT, "1"], [AT + 60, None]]), (PrometheusDataError, "not [number, string]")),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "expected"), [case[1:] for case in RANGE_CASES], ids=[c[0] for c in RANGE_CASES])
async def test_range_policy(
    scripted_server: ScriptedServer,
    answer: Answer,
    expected: list[tuple[float, float]] | tuple[type[PrometheusError], str],
) -> None:
    scripted_server.answer_in_turn(answer)
    async with _client(scripted_server) as client:
        if isinstance(expected, tuple):
            error_type, fragment = expected
            with pytest.raises(error_type, match="my_query") as raised:
                await client.range("my_query", start=AT, end=AT + 600, step_seconds=60)
            assert fragment in str(raised.value)
        else:
            assert await client.range("my_query", start=AT, end=AT + 600, step_seconds=60) == expected


async def test_requests_are_posted_forms_with_a_server_side_timeout(scripted_server: ScriptedServer) -> None:
    scripted_server.answer_in_turn(success("vector", []), success("matrix", []))
    endpoint = PrometheusEndpoint("scripted", scripted_server.url + "/prom/", timeout_seconds=2.5, retries=0)
    async with PrometheusClient(endpoint) as client:
        await client.instant('up{job="a"}', at=AT + 0.1234)
        await client.range("up", start=AT, end=AT + 60, step_seconds=15)
    instant, ranged = scripted_server.received
    assert instant.path == "/prom/api/v1/query"
    assert instant.form == {"query": 'up{job="a"}', "time": "1700000000.123", "timeout": "2.500"}
    assert "Authorization" not in instant.headers
    assert ranged.path == "/prom/api/v1/query_range"
    assert ranged.form == {
        "query": "up",
        "start": "1700000000.000",
        "end": "1700000060.000",
        "step": "15.000",
        "timeout": "2.500",
    }


async def test_a_long_range_is_split_into_contiguous_requests(scripted_server: ScriptedServer) -> None:
    def grid_answer(request: Any) -> Answer:
        start, end, step = (float(request.form[key]) for key in ("start", "end", "step"))
        count = round((end - start) / step) + 1
        return _matrix([[start + i * step, str(start + i * step)] for i in range(count)])

    scripted_server.script = grid_answer
    async with _client(scripted_server) as client:
        points = await client.range("q", start=AT, end=AT + 24_999 * 10, step_seconds=10)

    assert points == [(AT + i * 10, AT + i * 10) for i in range(25_000)]
    spans = [(float(r.form["start"]), float(r.form["end"])) for r in scripted_server.received]
    assert spans == [
        (AT, AT + 10_999 * 10),
        (AT + 11_000 * 10, AT + 21_999 * 10),
        (AT + 22_000 * 10, AT + 24_999 * 10),
    ]
