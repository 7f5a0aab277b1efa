"""The review adapter's failures, against real sockets on loopback.

The answers of a real API server (authenticated or not, allowed or not, and a daemon
whose own RBAC lacks the review verbs) are tested in tests/e2e/test_rbac.py.
"""

from __future__ import annotations

import socket

import pytest
from kubernetes import client

from autoscaler.adapters.kube_auth import Identity, KubeAuthUnavailableError, KubeReviewer


def _client_for(port: int) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = False  # one attempt: the reviewer's caller decides what a failure means
    return client.ApiClient(configuration)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_api_server_that_cannot_be_reached_is_unavailable_with_the_cause_chained(closed_port: int) -> None:
    with _client_for(closed_port) as api:
        reviewer = KubeReviewer(api, timeout_seconds=2)
        with pytest.raises(KubeAuthUnavailableError, match="TokenReview") as failure:
            reviewer.review_token("any")
        assert failure.value.__cause__ is not None
        with pytest.raises(KubeAuthUnavailableError, match="SubjectAccessReview"):
            reviewer.review_access(Identity("alice"), path="/metrics", verb="get")


def test_an_api_server_that_does_not_answer_in_time_is_unavailable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts in the kernel, never answers
        with (
            _client_for(listener.getsockname()[1]) as api,
            pytest.raises(KubeAuthUnavailableError, match="TokenReview"),
        ):
            KubeReviewer(api, timeout_seconds=0.5).review_token("any")
