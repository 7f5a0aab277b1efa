"""Retries, timeouts, size limits, auth files and configuration checks of the Prometheus client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from autoscaler.adapters import prometheus
from autoscaler.adapters.prometheus import (
    PrometheusClient,
    PrometheusDataError,
    PrometheusEndpoint,
    PrometheusUnavailableError,
    Sample,
)
from tests.unit.adapters.scripted_server import Answer, ScriptedServer, success

AT = 1_700_000_000.0
ONE = success("scalar", [AT, "1"])


def _endpoint(server: ScriptedServer, **overrides: Any) -> PrometheusEndpoint:
    settings: dict[str, Any] = {"retries": 2, "backoff_seconds": 0.01, "max_backoff_seconds": 0.02, **overrides}
    return PrometheusEndpoint("scripted", server.url, **settings)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_server_errors_and_throttling_are_retried(scripted_server: ScriptedServer, status: int) -> None:
    scripted_server.answer_in_turn(Answer(status=status, body=b"busy"), ONE)
    async with PrometheusClient(_endpoint(scripted_server)) as client:
        assert await client.instant("q", at=AT) == Sample(1.0, AT)
    assert len(scripted_server.received) == 2


async def test_persistent_server_errors_end_unavailable(scripted_server: ScriptedServer) -> None:
    scripted_server.answer_in_turn(Answer(status=503, body=b"overloaded"))
    async with PrometheusClient(_endpoint(scripted_server)) as client:
        with pytest.raises(PrometheusUnavailableError, match=r"'scripted': HTTP 503: 'overloaded' \(attempts: 3\)"):
            await client.instant("q", at=AT)
    assert len(scripted_server.received) == 3


async def test_retry_after_is_waited_for(scripted_server: ScriptedServer) -> None:
    scripted_server.answer_in_turn(Answer(status=429, headers={"Retry-After": "0.3"}), ONE)
    started = time.monotonic()
    async with PrometheusClient(_endpoint(scripted_server, max_backoff_seconds=1.0)) as client:
        assert await client.instant("q", at=AT) == Sample(1.0, AT)
    assert time.monotonic() - started >= 0.3


async def test_unparseable_retry_after_falls_back_to_backoff(scripted_server: ScriptedServer) -> None:
    scripted_server.answer_in_turn(Answer(status=429, headers={"Retry-After": "soon"}), ONE)
    async with PrometheusClient(_endpoint(scripted_server)) as client:
        assert await client.instant("q", at=AT) == Sample(1.0, AT)


async def test_retry_after_beyond_the_backoff_cap_gives_up_at_once(scripted_server: ScriptedServer) -> None:
    scripted_server.answer_in_turn(Answer(status=429, headers={"Retry-After": "60"}), ONE)
    async with PrometheusClient(_endpoint(scripted_server)) as client:
        with pytest.raises(PrometheusUnavailableError, match="asked to wait 60s") as raised:
            await client.instant("q", at=AT)
    assert raised.value.attempts == 1
    assert len(scripted_server.received) == 1


async def test_slow_answers_time_out_and_are_retried(scripted_server: ScriptedServer) -> None:
    scripted_server.answer_in_turn(Answer(delay_seconds=2.0, body=ONE.body))
    started = time.monotonic()
    async with PrometheusClient(_endpoint(scripted_server, timeout_seconds=0.2, retries=1)) as client:
        with pytest.raises(PrometheusUnavailableError, match=r"timed out after 0\.2s") as raised:
            await client.instant("q", at=AT)
    assert time.monotonic() - started < 1.5
    assert raised.value.attempts == 2
    assert isinstance(raised.value.__cause__, TimeoutError)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_answers_are_refused(
    scripted_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    monkeypatch.setattr(prometheus, "MAX_RESPONSE_BYTES", 1000)
    scripted_server.answer_in_turn(Answer(body=b"x" * 200_000, chunked=chunked))
    async with PrometheusClient(_endpoint(scripted_server)) as client:
        with pytest.raises(PrometheusDataError, match="exceeds 1000"):
            await client.instant("q", at=AT)
    assert len(scripted_server.received) == 1


async def test_bearer_token_is_stripped_and_sent(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc.def-ghi\n")
    scripted_server.answer_in_turn(ONE)
    async with PrometheusClient(_endpoint(scripted_server, bearer_token_file=str(token))) as client:
        await client.instant("q", at=AT)
    assert scripted_server.received[0].headers["Authorization"] == "Bearer abc.def-ghi"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read bearer_token_file"),
        (b"", "does not hold one printable token"),
        (b"two words", "does not hold one printable token"),
        (b"line\nbreak", "does not hold one printable token"),
        (b"x" * (prometheus.MAX_TOKEN_BYTES + 1), "does not hold one printable token"),
    ],
    ids=["missing", "empty", "space", "newline", "too-long"],
)
async def test_unusable_token_files_fail_before_any_request(
    scripted_server: ScriptedServer, tmp_path: Path, content: bytes | None, reason: str
) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_bytes(content)
    async with PrometheusClient(_endpoint(scripted_server, bearer_token_file=str(token))) as client:
        with pytest.raises(PrometheusUnavailableError, match=reason) as raised:
            await client.instant("q", at=AT)
    assert scripted_server.received == []
    assert str(token) in str(raised.value)
    assert "words" not in str(raised.value) and "break" not in str(raised.value)


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"url": "ftp://prom:9090"}, "url must be http"),
        ({"url": "http://"}, "url must be http"),
        ({"url": "prom:9090"}, "url must be http"),
        ({"url": "http://user:pw@prom:9090"}, "credentials in the url"),
        ({"url": "http://prom:9090/?x=1"}, "query or fragment"),
        ({"ca_file": "/ca.pem"}, "TLS settings need an https url"),
        ({"insecure_skip_verify": True}, "TLS settings need an https url"),
        ({"timeout_seconds": 0}, "timeout_seconds must be positive"),
        ({"retries": -1}, "retries must be 0 or more"),
        ({"backoff_seconds": -1}, "backoff_seconds"),
        ({"backoff_seconds": 2, "max_backoff_seconds": 1}, "backoff_seconds <= max_backoff_seconds"),
    ],
)
def test_endpoint_configuration_is_validated(settings: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        PrometheusEndpoint(**{"name": "main", "url": "http://prom:9090", **settings})
    assert "'main'" in str(raised.value)


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    endpoint = PrometheusEndpoint("main", "https://prom:9090", ca_file=str(tmp_path / "absent.pem"))
    with pytest.raises(ValueError, match="cannot load ca_file"):
        PrometheusClient(endpoint)


@pytest.mark.parametrize(
    ("start", "end", "step", "reason"),
    [
        (AT, AT + 60, 0.0, "step_seconds"),
        (AT, AT + 60, float("nan"), "step_seconds"),
        (AT + 60, AT, 10.0, "end must not be before start"),
        (AT, AT + 300_000, 1.0, "at most 250000"),
    ],
)
async def test_range_arguments_are_checked(
    scripted_server: ScriptedServer, start: float, end: float, step: float, reason: str
) -> None:
    async with PrometheusClient(_endpoint(scripted_server)) as client:
        with pytest.raises(ValueError, match=reason):
            await client.range("q", start=start, end=end, step_seconds=step)
    assert scripted_server.received == []


async def test_a_shared_session_is_left_open(scripted_server: ScriptedServer) -> None:
    scripted_server.answer_in_turn(ONE)
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(_endpoint(scripted_server), session=session)
        assert await client.instant("q", at=AT) == Sample(1.0, AT)
        await client.close()
        assert not session.closed


async def test_a_token_echoed_by_a_proxy_is_redacted(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("very-Secret")
    scripted_server.answer_in_turn(Answer(status=403, body=b"forbidden: Authorization: Bearer very-Secret"))
    async with PrometheusClient(_endpoint(scripted_server, bearer_token_file=str(token))) as client:
        with pytest.raises(prometheus.PrometheusQueryError) as raised:
            await client.instant("q", at=AT)
    assert "Bearer <redacted>" in str(raised.value)
    assert "Secret" not in str(raised.value)
