"""Authentication of the HTTP port: the real aiohttp server on loopback, a reviewer double.

The double stands in for the Kubernetes API only for what a real API server cannot be
made to do on demand (fail, or be counted call by call under a controlled clock);
tests/e2e/test_rbac.py runs the same checks against a real kube-apiserver.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from autoscaler.adapters.kube_auth import Identity, KubeAuthUnavailableError
from autoscaler.services.authn import AuthCacheSettings, Authenticator, bearer_token, review_path
from autoscaler.services.http_api import create_http_app
from autoscaler.services.telemetry import Telemetry
from autoscaler.settings import ConfigError, validate_settings
from tests.unit.services.test_http_api import engine_with_targets, serve, trace_target

PROMETHEUS = Identity("system:serviceaccount:monitoring:prometheus", uid="u-1", groups=("system:serviceaccounts",))
OUTSIDER = Identity("system:serviceaccount:default:nobody", uid="u-2")


@dataclass
class FakeReviewer:
    """Tokens and grants as a table; counts the reviews it is asked for; can be made to fail."""

    tokens: dict[str, Identity] = field(default_factory=lambda: {"prom-token": PROMETHEUS, "other": OUTSIDER})
    grants: set[tuple[str, str, str]] = field(
        default_factory=lambda: {
            (PROMETHEUS.user, "/metrics", "get"),
            (PROMETHEUS.user, "/predictive-autoscaler/api/v1/targets", "get"),
        }
    )
    failing: bool = False
    token_reviews: int = 0
    access_reviews: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def review_token(self, token: str) -> Identity | None:
        with self.lock:
            self.token_reviews += 1
        if self.failing:
            raise KubeAuthUnavailableError("TokenReview: connection refused")
        return self.tokens.get(token)

    def review_access(self, identity: Identity, *, path: str, verb: str) -> bool:
        with self.lock:
            self.access_reviews.append((identity.user, path, verb))
        return (identity.user, path, verb) in self.grants


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reviewer() -> FakeReviewer:
    return FakeReviewer()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def base(reviewer: FakeReviewer, clock: Clock) -> AsyncIterator[str]:
    engine = engine_with_targets(trace_target())
    authenticator = Authenticator(
        reviewer, settings=AuthCacheSettings(allowed_seconds=60, denied_seconds=10), monotonic=clock
    )
    app = create_http_app(engine, telemetry=Telemetry(engine, process_metrics=False), authenticator=authenticator)
    async with serve(app) as url:
        yield url


async def get(base: str, path: str, token: str | None = None) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(base + path, headers=headers) as response:
        return response.status, dict(response.headers), await response.text()


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc ", "abc"),
    ],
)
def test_bearer_token_is_read_from_the_authorization_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("path", "reviewed"),
    [
        ("/metrics", "/metrics"),
        ("/api/v1/targets", "/predictive-autoscaler/api/v1/targets"),
        ("/", "/predictive-autoscaler/"),
        ("/healthz", "/predictive-autoscaler/healthz"),
    ],
)
def test_paths_are_reviewed_clear_of_the_urls_kubernetes_grants_everyone(path: str, reviewed: str) -> None:
    assert review_path(path) == reviewed


@pytest.mark.parametrize("path", ["/metrics", "/api/v1/targets", "/", "/openapi.json", "/no/such/path"])
async def test_no_token_gets_401_with_a_bearer_challenge(base: str, reviewer: FakeReviewer, path: str) -> None:
    status, headers, body = await get(base, path)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="predictive-autoscaler"'
    assert "Authorization: Bearer" in body
    assert reviewer.token_reviews == 0


async def test_a_token_the_api_server_rejects_gets_401(base: str, reviewer: FakeReviewer) -> None:
    status, _, body = await get(base, "/metrics", token="made-up")
    assert status == 401
    assert "TokenReview" in body
    assert reviewer.access_reviews == []


async def test_a_user_rbac_does_not_allow_gets_403_naming_user_and_path(base: str) -> None:
    status, _, body = await get(base, "/metrics", token="other")
    assert status == 403
    assert OUTSIDER.user in body and "get /metrics" in body


async def test_an_allowed_user_gets_the_answer_reviewed_for_that_path_and_verb(
    base: str, reviewer: FakeReviewer
) -> None:
    status, _, body = await get(base, "/metrics", token="prom-token")
    assert status == 200 and "predictive_autoscaler_targets" in body
    status, _, _ = await get(base, "/api/v1/targets", token="prom-token")
    assert status == 200
    assert reviewer.access_reviews == [
        (PROMETHEUS.user, "/metrics", "get"),
        (PROMETHEUS.user, "/predictive-autoscaler/api/v1/targets", "get"),  # clear of Kubernetes' own /api/*
    ]
    status, _, _ = await get(base, "/openapi.json", token="prom-token")
    assert status == 403  # granted per path: /metrics does not open the rest


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_stays_open_for_the_kubelet(base: str, reviewer: FakeReviewer, path: str) -> None:
    status, _, _ = await get(base, path)
    assert status == 200
    assert reviewer.token_reviews == 0


async def test_answers_are_cached_grants_longer_than_denials(base: str, reviewer: FakeReviewer, clock: Clock) -> None:
    for _ in range(3):
        assert (await get(base, "/metrics", token="prom-token"))[0] == 200
        assert (await get(base, "/metrics", token="other"))[0] == 403
    assert reviewer.token_reviews == 2
    assert len(reviewer.access_reviews) == 2

    clock.now += 11  # past the denial's 10 s, within the grant's 60 s
    assert (await get(base, "/metrics", token="prom-token"))[0] == 200
    assert (await get(base, "/metrics", token="other"))[0] == 403
    assert len(reviewer.access_reviews) == 3

    reviewer.grants.add((OUTSIDER.user, "/metrics", "get"))  # a role granted now takes effect within 10 s
    clock.now += 11
    assert (await get(base, "/metrics", token="other"))[0] == 200
    clock.now += 50  # the first token review and grant expire: both reviewed again
    assert (await get(base, "/metrics", token="prom-token"))[0] == 200
    assert reviewer.token_reviews == 3
    assert len(reviewer.access_reviews) == 5


async def test_a_kube_api_that_does_not_answer_gives_503_never_an_open_door(base: str, reviewer: FakeReviewer) -> None:
    reviewer.failing = True
    status, _, body = await get(base, "/metrics", token="prom-token")
    assert status == 503 and "retry" in body
    reviewer.failing = False
    assert (await get(base, "/metrics", token="prom-token"))[0] == 200  # the failure was not cached


async def test_a_long_path_is_echoed_truncated(base: str) -> None:
    status, _, body = await get(base, "/api/v1/targets/" + "x" * 5000, token="other")
    assert status == 403
    assert len(body) < 400


async def test_the_cache_is_bounded(reviewer: FakeReviewer, clock: Clock) -> None:
    authenticator = Authenticator(reviewer, settings=AuthCacheSettings(max_entries=8), monotonic=clock)
    for index in range(100):
        await authenticator.check(f"Bearer made-up-{index}", path="/metrics", verb="get")
    assert reviewer.token_reviews == 100
    await authenticator.check("Bearer made-up-99", path="/metrics", verb="get")
    await authenticator.check("Bearer made-up-0", path="/metrics", verb="get")
    assert reviewer.token_reviews == 101  # 99 was still cached, 0 had been evicted


@pytest.mark.parametrize(
    ("http", "authenticated"),
    [
        ({}, True),  # 0.0.0.0 by default
        ({"host": "10.0.0.7"}, True),
        ({"host": "127.0.0.1"}, False),
        ({"host": "::1"}, False),
        ({"host": "localhost"}, False),
        ({"host": "127.0.0.1", "auth": {"authenticateLoopback": True}}, True),
        ({"host": "127.0.0.1", "auth": {"mode": "none"}}, False),
        ({"host": "0.0.0.0", "auth": {"mode": "none", "allowUnauthenticatedRemote": True}}, False),
    ],
)
def test_the_daemon_authenticates_beyond_loopback_unless_told_otherwise_by_name(
    http: dict[str, object], authenticated: bool
) -> None:
    assert validate_settings({"http": http}).http.authenticated is authenticated


def test_an_open_port_beyond_loopback_must_be_asked_for_by_name() -> None:
    with pytest.raises(ConfigError, match="allowUnauthenticatedRemote"):
        validate_settings({"http": {"host": "0.0.0.0", "auth": {"mode": "none"}}})
