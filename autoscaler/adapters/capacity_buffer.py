"""The CapacityBuffer API (autoscaling.x-k8s.io): which version a cluster serves.

The object we apply is `autoscaler.domain.placeholders.capacity_buffer_manifest`.

A CapacityBuffer asks the cluster autoscaler for spare room shaped like the pods of a
scalable object. With `scalableRef` pointing at the serving Deployment the autoscaler
derives the chunk shape itself, so no pod template is copied and no priority class is
needed: the buffer pods are virtual and never compete with real pods.
"""

from __future__ import annotations

from kubernetes import client

from autoscaler.domain.placeholders import CAPACITY_BUFFER_GROUP

PLURAL = "capacitybuffers"
# Newest first: v1alpha1 is still served (deprecated) by clusters that also serve v1beta1.
KNOWN_VERSIONS = ("v1beta1", "v1alpha1")


def served_version(api_client: client.ApiClient, *, timeout_seconds: float) -> str | None:
    """The newest CapacityBuffer version the API server serves, or None.

    The group also carries other kinds (ProvisioningRequest, CapacityQuota), so the
    resource list of each version is checked, not just the group's presence.
    """
    groups = client.ApisApi(api_client).get_api_versions(_request_timeout=timeout_seconds)
    served = {
        version.version
        for group in groups.groups or []
        if group.name == CAPACITY_BUFFER_GROUP
        for version in group.versions or []
    }
    custom = client.CustomObjectsApi(api_client)
    for version in KNOWN_VERSIONS:
        if version not in served:
            continue
        resources = custom.get_api_resources(CAPACITY_BUFFER_GROUP, version, _request_timeout=timeout_seconds)
        if any(resource.name == PLURAL for resource in resources.resources or []):
            return version
    return None
