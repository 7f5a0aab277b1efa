"""Kubernetes API clients for the daemon's composition root.

Built in `autoscaler.daemon`, the composition root, and handed to the adapters that
need one (the actuator, the replica reader, the HTTP API's reviews); the engine builds
none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubernetes import client, config
from kubernetes.client import ApiClient

# The client's config helpers carry no annotations; these are their signatures as used.
_client_from_kubeconfig: Callable[..., ApiClient] = config.new_client_from_config
_load_incluster_config: Callable[..., None] = config.load_incluster_config

log = logging.getLogger(__name__)


def api_client(kubeconfig: str | None) -> ApiClient:
    """The named kubeconfig's client; else the pod's service account; else the default kubeconfig."""
    return configured_api_client(kubeconfig) or _client_from_kubeconfig()


def configured_api_client(kubeconfig: str | None) -> ApiClient | None:
    """A client only where access was given: a named kubeconfig, or the pod's service account.

    None elsewhere (a daemon run outside a cluster, or a pod without a token), rather
    than whatever cluster a default kubeconfig happens to point at.
    """
    if kubeconfig:
        return _client_from_kubeconfig(config_file=kubeconfig)
    configuration = client.Configuration()
    try:
        _load_incluster_config(client_configuration=configuration)
    except config.ConfigException as error:
        log.info("no in-cluster Kubernetes API access", extra={"reason": str(error)})
        return None
    return ApiClient(configuration)


def close_api_client(api: ApiClient) -> None:
    close: Callable[[], None] = api.close  # the client is untyped
    close()
