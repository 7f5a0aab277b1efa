"""Ready and desired replicas from a Deployment's or StatefulSet's JSON, and what is refused.

The reads themselves run against the real control plane in tests/e2e/test_replicas.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.adapters.replicas import ReplicaReadError, replica_counts
from autoscaler.domain.signals import ReplicaCounts


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"spec": {"replicas": 4}, "status": {"readyReplicas": 3}}, ReplicaCounts(ready=3, desired=4)),
        # The API server leaves readyReplicas out while it is 0, and status out before the first sync.
        ({"spec": {"replicas": 2}, "status": {"replicas": 2}}, ReplicaCounts(ready=0, desired=2)),
        ({"spec": {"replicas": 2}}, ReplicaCounts(ready=0, desired=2)),
        # spec.replicas defaults to 1 when the object was created without it.
        ({"spec": {}, "status": {"readyReplicas": 1}}, ReplicaCounts(ready=1, desired=1)),
        ({"spec": {"replicas": 0}, "status": {}}, ReplicaCounts(ready=0, desired=0)),
    ],
)
def test_replica_counts(body: dict[str, Any], expected: ReplicaCounts) -> None:
    assert replica_counts(body, workload="Deployment llm/chat") == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": {"readyReplicas": 1}}, "no spec"),
        ([], "no spec"),
        ({"spec": {"replicas": "3"}}, "is not a count"),
        ({"spec": {"replicas": 3}, "status": {"readyReplicas": -1}}, "is not a count"),
        ({"spec": {"replicas": True}}, "is not a count"),
        ({"spec": {"replicas": 3}, "status": ["ready"]}, "is not a count"),
    ],
)
def test_replica_counts_refuses_what_is_not_a_workload(body: Any, message: str) -> None:
    with pytest.raises(ReplicaReadError, match=rf"Deployment llm/chat: .*{message}"):
        replica_counts(body, workload="Deployment llm/chat")
