"""Who is calling, and may they: the Kubernetes TokenReview and SubjectAccessReview APIs.

The same two calls kube-rbac-proxy and controller-runtime's metrics filter make: the API
server validates a bearer token (a ServiceAccount token, or any token its authenticators
accept) and then answers whether that user may `get` a non-resource URL such as
/metrics. The client is synchronous; the service calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException


class KubeAuthError(RuntimeError):
    """A review could not be made; the cause is chained."""


class KubeAuthUnavailableError(KubeAuthError):
    """The API server did not answer the review (connection error, timeout, 429 or 5xx)."""


class KubeAuthRefusedError(KubeAuthError):
    """The API server refused to make the review: the daemon's own RBAC lacks `create` on it."""


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated user as the TokenReview reports it."""

    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """The user's extra attributes as sorted (key, values) pairs: hashable, so an identity can key a cache."""


def _call(what: str, make: Callable[[], Any]) -> Any:
    """`make()`, with the client's errors as this adapter's, the cause chained."""
    try:
        return make()
    except ApiException as exc:
        if exc.status in (401, 403):
            raise KubeAuthRefusedError(f"{what}: HTTP {exc.status} {exc.reason}") from exc
        raise KubeAuthUnavailableError(f"{what}: HTTP {exc.status} {exc.reason}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeAuthUnavailableError(f"{what}: {exc}") from exc


class KubeReviewer:
    """TokenReview and SubjectAccessReview against one API server."""

    def __init__(self, api_client: client.ApiClient, *, timeout_seconds: float = 5.0) -> None:
        self._authentication = client.AuthenticationV1Api(api_client)
        self._authorization = client.AuthorizationV1Api(api_client)
        self._timeout = timeout_seconds

    def review_token(self, token: str) -> Identity | None:
        """The token's user, or None when the API server does not authenticate it."""
        review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        answer = _call(
            "TokenReview",
            lambda: self._authentication.create_token_review(review, _request_timeout=self._timeout),
        )
        status = answer.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        return Identity(
            user=user.username or "",
            uid=user.uid or "",
            groups=tuple(user.groups or ()),
            extra=tuple(sorted((key, tuple(values)) for key, values in (user.extra or {}).items())),
        )

    def review_access(self, identity: Identity, *, path: str, verb: str) -> bool:
        """Whether RBAC (or the cluster's authorizer) lets `identity` use `verb` on the non-resource `path`."""
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=identity.user,
                uid=identity.uid or None,
                groups=list(identity.groups),
                extra={key: list(values) for key, values in identity.extra} or None,
                non_resource_attributes=client.V1NonResourceAttributes(path=path, verb=verb),
            )
        )
        answer = _call(
            "SubjectAccessReview",
            lambda: self._authorization.create_subject_access_review(review, _request_timeout=self._timeout),
        )
        return bool(answer.status is not None and answer.status.allowed)
