"""Authentication and authorisation of HTTP requests, the way kube-rbac-proxy does it.

A request carries `Authorization: Bearer <token>`. The token goes to a TokenReview; the
user it names goes to a SubjectAccessReview for the request's non-resource URL and verb
(`get /metrics`, and `get /predictive-autoscaler/api/v1/targets` for the API: see
`REVIEW_PREFIX`). Without a token, or with one the API server
does not accept, the answer is 401; when RBAC does not allow the user, 403; when the
API server cannot be asked, 503 (never an open door).

Answers are cached for a short time, as kube-rbac-proxy does, so a Prometheus scraping
every 15 s costs two reviews a minute rather than two per scrape. Tokens are cached by
their SHA-256, never in clear. Denials are cached for less time than grants, so a
freshly granted role takes effect quickly. Reviews in flight are bounded, so a flood of
made-up tokens queues here instead of on the API server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from autoscaler.adapters.kube_auth import Identity, KubeAuthError

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MAX_ECHOED_PATH = 120
# Kubernetes' default roles let every authenticated user `get` /api/* and /openapi/*
# (system:discovery) and /healthz, /readyz (system:public-info-viewer): reviewed as they
# are, our /api/v1/... would be open to any token. Every path but /metrics is therefore
# reviewed under this prefix; /metrics keeps the name Prometheus's roles already use.
REVIEW_PREFIX = "/predictive-autoscaler"


class Reviewer(Protocol):
    def review_token(self, token: str) -> Identity | None: ...

    def review_access(self, identity: Identity, *, path: str, verb: str) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCacheSettings:
    allowed_seconds: float = 60.0
    denied_seconds: float = 10.0
    max_entries: int = 4096
    max_concurrent_reviews: int = 8

    def __post_init__(self) -> None:
        if min(self.allowed_seconds, self.denied_seconds) < 0 or min(self.max_entries, self.max_concurrent_reviews) < 1:
            raise ValueError("auth cache settings must be positive")


@dataclass(frozen=True, slots=True)
class Verdict:
    """200 (go on), 401, 403 or 503, with a message for the caller."""

    status: int
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


ALLOWED = Verdict(200)


class _ExpiringCache(Generic[K, V]):
    """At most `max_entries` answers, each until its own deadline; the oldest go first."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max_entries = max_entries

    def get(self, key: K, now: float) -> tuple[bool, V | None]:
        found = self._entries.get(key)
        if found is None:
            return False, None
        if found[0] <= now:
            del self._entries[key]
            return False, None
        return True, found[1]

    def put(self, key: K, value: V, *, until: float) -> None:
        self._entries[key] = (until, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme in any case), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def review_path(path: str) -> str:
    """The non-resource URL a SubjectAccessReview is asked about for a request's path."""
    return path if path == "/metrics" else f"{REVIEW_PREFIX}{path}"


def _shown(path: str) -> str:
    return path if len(path) <= MAX_ECHOED_PATH else f"{path[:MAX_ECHOED_PATH]}..."


class Authenticator:
    """Decides whether a request may go on; see the module docstring."""

    def __init__(
        self,
        reviewer: Reviewer,
        *,
        settings: AuthCacheSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviewer = reviewer
        self._settings = settings or AuthCacheSettings()
        self._monotonic = monotonic
        self._identities: _ExpiringCache[bytes, Identity | None] = _ExpiringCache(self._settings.max_entries)
        self._grants: _ExpiringCache[tuple[Identity, str, str], bool] = _ExpiringCache(self._settings.max_entries)
        self._reviews = asyncio.Semaphore(self._settings.max_concurrent_reviews)

    async def check(self, authorization: str | None, *, path: str, verb: str) -> Verdict:
        """Whether a request for `path` (as requested) with this Authorization header may go on."""
        path = review_path(path)
        token = bearer_token(authorization)
        if token is None:
            return Verdict(401, "authentication required: send Authorization: Bearer <Kubernetes token>")
        try:
            identity = await self._identity(token)
            if identity is None:
                return Verdict(401, "the bearer token was not accepted by the Kubernetes API (TokenReview)")
            if not await self._allowed(identity, path, verb):
                return Verdict(403, f"user {identity.user!r} may not {verb} {_shown(path)} (SubjectAccessReview)")
        except KubeAuthError as error:
            log.warning("cannot review a request's credentials: %s", error)
            return Verdict(503, "cannot verify credentials now: the Kubernetes API did not answer; retry")
        return ALLOWED

    def _ttl(self, granted: bool) -> float:
        return self._settings.allowed_seconds if granted else self._settings.denied_seconds

    async def _identity(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).digest()
        found, identity = self._identities.get(key, self._monotonic())
        if found:
            return identity
        async with self._reviews:
            identity = await asyncio.to_thread(self._reviewer.review_token, token)
        self._identities.put(key, identity, until=self._monotonic() + self._ttl(identity is not None))
        return identity

    async def _allowed(self, identity: Identity, path: str, verb: str) -> bool:
        key = (identity, path, verb)
        found, allowed = self._grants.get(key, self._monotonic())
        if found:
            return bool(allowed)
        async with self._reviews:
            allowed = await asyncio.to_thread(self._reviewer.review_access, identity, path=path, verb=verb)
        self._grants.put(key, allowed, until=self._monotonic() + self._ttl(allowed))
        return allowed
