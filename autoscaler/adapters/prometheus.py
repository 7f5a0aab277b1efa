"""Async client for one configured Prometheus endpoint (HTTP API v1).

Endpoints come only from the daemon's configuration. Metadata may pick an endpoint by
name; the engine enforces that, so no URL from untrusted input ever reaches this module.

Data policy (also in docs/prometheus.md). "Missing" is never turned into 0:

=====================================  ==============================================
Prometheus answers                     the client returns / raises
=====================================  ==============================================
empty vector / matrix                  ``None`` (instant), ``[]`` (range): missing data
NaN, +Inf or -Inf sample               dropped as missing (``None`` / point omitted)
one series                             its value(s)
more than one series                   ``PrometheusDataError`` naming the label sets
scalar                                 accepted as one sample
string, or a range vector (instant)    ``PrometheusDataError``
non-JSON, wrong shape, too large       ``PrometheusDataError``
``status: error`` (400, 422, ...)      ``PrometheusQueryError`` with errorType/error;
                                       never retried: the query itself is wrong
other 4xx (401, 403, 404)              ``PrometheusQueryError``, error_type ``http_<code>``
connection error, timeout, 5xx, 429    retried with exponential backoff and full
                                       jitter; then ``PrometheusUnavailableError``
=====================================  ==============================================

Every error subclasses `PrometheusError`, names the endpoint and chains its cause. The
bearer token is read from its file on every request, so a rotated token is picked up
without a restart, and it is never stored, logged or shown in a repr.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from autoscaler.adapters.sample_age import newest_sample_query

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Prometheus refuses a range query whose (end - start) / step exceeds 11,000.
MAX_POINTS_PER_REQUEST = 11_000
# The longest history a target may ask for (spec: 200,000 steps), with headroom.
MAX_RANGE_POINTS = 250_000
MAX_TOKEN_BYTES = 16 * 1024
_SHOWN_QUERY_CHARS = 200
_SHOWN_LABEL_SETS = 3
_SHOWN_BODY_CHARS = 300


class PrometheusError(Exception):
    """Base of every Prometheus adapter failure; the message names the endpoint."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"prometheus endpoint {endpoint!r}: {message}")
        self.endpoint = endpoint


class PrometheusUnavailableError(PrometheusError):
    """Not reachable, timing out or overloaded after every retry: transient."""

    def __init__(self, endpoint: str, message: str, *, attempts: int) -> None:
        super().__init__(endpoint, message)
        self.attempts = attempts


class PrometheusQueryError(PrometheusError):
    """Prometheus rejected the request (bad PromQL, execution error, auth): not retried."""

    def __init__(self, endpoint: str, query: str, *, error_type: str, error: str, status: int) -> None:
        super().__init__(endpoint, f"query {_shorten(query)!r} failed ({error_type}, HTTP {status}): {error}")
        self.query = query
        self.error_type = error_type
        self.error = error
        self.status = status


class PrometheusDataError(PrometheusError):
    """The answer is not one usable series: several series, a string, or malformed."""

    def __init__(self, endpoint: str, query: str, reason: str) -> None:
        super().__init__(endpoint, f"query {_shorten(query)!r}: {reason}")
        self.query = query
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PrometheusEndpoint:
    """One named Prometheus from the daemon's configuration.

    `retries` counts the attempts after the first one. The token itself is not a field:
    only the path to it, so neither repr nor logs can leak it.
    """

    name: str
    url: str
    bearer_token_file: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    timeout_seconds: float = 5.0
    retries: int = 3
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"prometheus endpoint {self.name!r}: url must be http(s)://host[:port][/path]")
        if parts.query or parts.fragment:
            raise ValueError(f"prometheus endpoint {self.name!r}: url must not have a query or fragment")
        if parts.username or parts.password:
            raise ValueError(
                f"prometheus endpoint {self.name!r}: credentials in the url are not allowed; use bearer_token_file"
            )
        if parts.scheme == "http" and (self.ca_file or self.insecure_skip_verify):
            raise ValueError(f"prometheus endpoint {self.name!r}: TLS settings need an https url")
        if not self.timeout_seconds > 0:
            raise ValueError(f"prometheus endpoint {self.name!r}: timeout_seconds must be positive")
        if self.retries < 0:
            raise ValueError(f"prometheus endpoint {self.name!r}: retries must be 0 or more")
        if self.backoff_seconds < 0 or self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError(f"prometheus endpoint {self.name!r}: need 0 <= backoff_seconds <= max_backoff_seconds")

    @property
    def api_url(self) -> str:
        return self.url.rstrip("/") + "/api/v1/"


@dataclass(frozen=True, slots=True)
class Sample:
    value: float
    timestamp: float


class _AttemptFailedError(Exception):
    """One failed attempt; `retry_after` is the server's own wait, if it sent one."""

    def __init__(self, description: str, *, retry_after: float | None = None, retryable: bool = True) -> None:
        super().__init__(description)
        self.retry_after = retry_after
        self.retryable = retryable


class PrometheusClient:
    """Instant and range queries against one endpoint.

    Pass `session` to share a connection pool; the client then leaves closing it to
    the owner. `rng` is injectable so tests can reproduce the jittered backoff.
    """

    def __init__(
        self,
        endpoint: PrometheusEndpoint,
        *,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._session = session
        self._owns_session = session is None
        self._rng = rng or random.Random()
        self._ssl = _ssl_context(endpoint)

    async def instant(self, query: str, *, at: float) -> Sample | None:
        """The query's value at `at` (unix seconds), or None when there is none."""
        data = await self._call("query", query, {"query": query, "time": _format_time(at)})
        result_type, result = self._envelope(query, data)
        if result_type == "scalar":
            return _finite_sample(self._point(query, result))
        if result_type == "vector":
            series = self._single_series(query, result)
            if series is None:
                return None
            return _finite_sample(self._point(query, series.get("value")))
        raise self._data_error(query, _unusable_type(result_type))

    async def range(self, query: str, *, start: float, end: float, step_seconds: float) -> list[tuple[float, float]]:
        """(timestamp, value) on the grid start, start + step, ... <= end; missing steps omitted.

        Long ranges are split into requests below Prometheus's per-series point limit
        and merged, each grid point appearing once.
        """
        if not step_seconds > 0 or not math.isfinite(step_seconds):
            raise ValueError("step_seconds must be a positive number")
        if end < start:
            raise ValueError("end must not be before start")
        total_points = math.floor((end - start) / step_seconds + 1e-9) + 1
        if total_points > MAX_RANGE_POINTS:
            raise ValueError(f"range holds {total_points} points; at most {MAX_RANGE_POINTS} allowed")
        points: dict[float, float] = {}
        for first, count in _chunks(total_points, MAX_POINTS_PER_REQUEST):
            chunk_start = start + first * step_seconds
            chunk_end = start + (first + count - 1) * step_seconds
            params = {
                "query": query,
                "start": _format_time(chunk_start),
                "end": _format_time(chunk_end),
                "step": _format_time(step_seconds),
            }
            data = await self._call("query_range", query, params)
            result_type, result = self._envelope(query, data)
            if result_type != "matrix":
                raise self._data_error(query, f"a range query returned {result_type!r}, not a matrix")
            series = self._single_series(query, result)
            if series is None:
                continue
            values = series.get("values")
            if not isinstance(values, list):
                raise self._data_error(query, "series has no 'values' list")
            if len(values) > count:
                raise self._data_error(query, f"{len(values)} points returned where {count} were asked")
            for raw in values:
                sample = _finite_sample(self._point(query, raw))
                if sample is not None:
                    points[sample.timestamp] = sample.value
        return sorted(points.items())

    async def newest_sample_at(self, queries: Sequence[str], *, at: float) -> float | None:
        """When the newest raw sample behind the stalest input of `queries` was taken, seen at `at`.

        None when that is unknown: the queries read no plain selector, or none of their
        selectors has a sample within the lookback. See `sample_age`.
        """
        query = newest_sample_query(tuple(queries))
        if query is None:
            return None
        sample = await self.instant(query, at=at)
        return None if sample is None else sample.value

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _call(self, api: str, query: str, params: Mapping[str, str]) -> Any:
        """POST one API call with retries; returns the decoded JSON body."""
        endpoint = self.endpoint
        form = dict(params)
        # Let Prometheus give up on evaluation too, instead of computing for nobody.
        form["timeout"] = _format_time(endpoint.timeout_seconds)
        attempts = endpoint.retries + 1
        for attempt in range(attempts):
            try:
                return await self._attempt(api, query, form)
            except _AttemptFailedError as failure:
                if attempt == attempts - 1 or not failure.retryable:
                    raise PrometheusUnavailableError(
                        endpoint.name, f"{failure} (attempts: {attempt + 1})", attempts=attempt + 1
                    ) from failure.__cause__ or failure
                delay = self._backoff(attempt)
                if failure.retry_after is not None:
                    if failure.retry_after > endpoint.max_backoff_seconds:
                        raise PrometheusUnavailableError(
                            endpoint.name,
                            f"{failure}; server asked to wait {failure.retry_after:g}s, more than "
                            f"max_backoff_seconds {endpoint.max_backoff_seconds:g}s",
                            attempts=attempt + 1,
                        ) from failure.__cause__ or failure
                    delay = max(delay, failure.retry_after)
                logger.info(
                    "prometheus endpoint %r: attempt %d/%d failed (%s); retrying in %.3fs",
                    endpoint.name,
                    attempt + 1,
                    attempts,
                    failure,
                    delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _attempt(self, api: str, query: str, form: Mapping[str, str]) -> Any:
        session = self._session_for_request()
        headers = {"Accept": "application/json"}
        token = self._read_token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        timeout = aiohttp.ClientTimeout(total=self.endpoint.timeout_seconds)
        try:
            async with session.post(
                self.endpoint.api_url + api,
                data=form,
                headers=headers,
                timeout=timeout,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                body = await self._read_body(query, response)
                status = response.status
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError as error:
            raise _AttemptFailedError(f"timed out after {self.endpoint.timeout_seconds:g}s") from error
        except aiohttp.ClientSSLError as error:
            # A certificate the CA does not sign will not be signed a second later.
            raise _AttemptFailedError(f"TLS failed: {error}", retryable=False) from error
        except aiohttp.ClientError as error:
            raise _AttemptFailedError(f"request failed: {type(error).__name__}: {error}") from error
        if token is not None and token.encode() in body:
            # Some auth proxies echo the request's headers in their error pages.
            body = body.replace(token.encode(), b"<redacted>")
        if status == 429 or status >= 500:
            raise _AttemptFailedError(f"HTTP {status}: {_describe_body(body)}", retry_after=retry_after)
        if status >= 400:
            error_type, message = _error_fields(body, status)
            raise PrometheusQueryError(self.endpoint.name, query, error_type=error_type, error=message, status=status)
        if status != 200:
            raise self._data_error(query, f"unexpected HTTP {status} (redirects are not followed)")
        try:
            decoded = json.loads(body)
        except ValueError as error:
            raise self._data_error(query, f"answer is not JSON: {_describe_body(body)}") from error
        if isinstance(decoded, dict) and decoded.get("status") == "error":
            error_type, message = _error_fields(body, status)
            raise PrometheusQueryError(self.endpoint.name, query, error_type=error_type, error=message, status=status)
        return decoded

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)], so clients spread out."""
        ceiling = min(self.endpoint.max_backoff_seconds, self.endpoint.backoff_seconds * 2**attempt)
        return self._rng.uniform(0.0, ceiling)

    def _session_for_request(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    def _read_token(self) -> str | None:
        path = self.endpoint.bearer_token_file
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_TOKEN_BYTES + 1)
        except OSError as error:
            raise PrometheusUnavailableError(
                self.endpoint.name, f"cannot read bearer_token_file {path!r}: {error.strerror}", attempts=0
            ) from error
        token = raw.decode("utf-8", errors="replace").strip()
        if len(raw) > MAX_TOKEN_BYTES or not token or not token.isprintable() or " " in token:
            # The reason stays generic: the token's content must not reach a message.
            raise PrometheusUnavailableError(
                self.endpoint.name,
                f"bearer_token_file {path!r} does not hold one printable token of at most {MAX_TOKEN_BYTES} bytes",
                attempts=0,
            )
        return token

    async def _read_body(self, query: str, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > MAX_RESPONSE_BYTES:
            raise self._data_error(query, f"response of {declared} bytes exceeds {MAX_RESPONSE_BYTES}")
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body.extend(chunk)
            if len(body) > MAX_RESPONSE_BYTES:
                raise self._data_error(query, f"response exceeds {MAX_RESPONSE_BYTES} bytes")
        return bytes(body)

    def _envelope(self, query: str, data: Any) -> tuple[str, Any]:
        """Unwrap {"status": "success", "data": {"resultType": ..., "result": ...}}."""
        if not isinstance(data, dict) or data.get("status") != "success":
            raise self._data_error(query, "answer is not a success envelope")
        inner = data.get("data")
        if not isinstance(inner, dict) or not isinstance(inner.get("resultType"), str) or "result" not in inner:
            raise self._data_error(query, "answer has no data.resultType and data.result")
        return inner["resultType"], inner["result"]

    def _single_series(self, query: str, result: Any) -> dict[str, Any] | None:
        if not isinstance(result, list) or not all(isinstance(item, dict) for item in result):
            raise self._data_error(query, "result is not a list of series")
        if not result:
            return None
        if len(result) > 1:
            shown = ", ".join(_shorten(_label_set(item.get("metric")), 200) for item in result[:_SHOWN_LABEL_SETS])
            more = f" and {len(result) - _SHOWN_LABEL_SETS} more" if len(result) > _SHOWN_LABEL_SETS else ""
            raise self._data_error(query, f"returned {len(result)} series, exactly one is required: {shown}{more}")
        series: dict[str, Any] = result[0]
        return series

    def _point(self, query: str, raw: Any) -> Sample:
        if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) != 2:
            raise self._data_error(query, f"sample is not [timestamp, value]: {_shorten(repr(raw), 80)}")
        timestamp, value = raw
        if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not isinstance(value, str):
            raise self._data_error(query, f"sample is not [number, string]: {_shorten(repr(raw), 80)}")
        try:
            return Sample(value=float(value), timestamp=float(timestamp))
        except ValueError as error:
            raise self._data_error(query, f"sample value {_shorten(value, 40)!r} is not a number") from error

    def _data_error(self, query: str, reason: str) -> PrometheusDataError:
        return PrometheusDataError(self.endpoint.name, query, reason)


def _unusable_type(result_type: str) -> str:
    if result_type == "string":
        return "returned a string; a number is required"
    if result_type == "matrix":
        return "returned a range vector; use an instant vector or scalar expression"
    return f"returned unknown result type {_shorten(result_type, 40)!r}"


def _finite_sample(sample: Sample) -> Sample | None:
    return sample if math.isfinite(sample.value) else None


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    """(first index, count) slices of a grid of `total` points."""
    return [(first, min(size, total - first)) for first in range(0, total, size)]


def _format_time(seconds: float) -> str:
    # Prometheus works in milliseconds; more digits only add float noise.
    return f"{seconds:.3f}"


def _retry_after_seconds(header: str | None) -> float | None:
    if header is None:
        return None
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _error_fields(body: bytes, status: int) -> tuple[str, str]:
    """errorType and error of a Prometheus error answer; the status and body text otherwise."""
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None  # a proxy's plain-text error page
    if isinstance(decoded, dict) and decoded.get("status") == "error":
        return str(decoded.get("errorType", "unknown")), _shorten(str(decoded.get("error", "")), 1000)
    return f"http_{status}", _describe_body(body)


def _describe_body(body: bytes) -> str:
    text = body[:_SHOWN_BODY_CHARS].decode("utf-8", errors="replace").strip()
    return repr(text) if text else "(empty body)"


def _label_set(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "{?}"
    return "{" + ",".join(f'{name}="{value}"' for name, value in sorted(metric.items())) + "}"


def _shorten(text: str, limit: int = _SHOWN_QUERY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ssl_context(endpoint: PrometheusEndpoint) -> ssl.SSLContext | bool:
    if not endpoint.url.startswith("https"):
        return True  # aiohttp's default; unused for plain http
    try:
        context = ssl.create_default_context(cafile=endpoint.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"prometheus endpoint {endpoint.name!r}: cannot load ca_file {endpoint.ca_file!r}: {error}"
        ) from error
    if endpoint.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
