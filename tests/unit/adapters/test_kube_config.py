"""Which Kubernetes API client the daemon builds, from what it was given."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.adapters import kube_config

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: "not-a-secret"}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
"""


def test_no_client_without_a_service_account_or_a_named_kubeconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not whatever cluster a default kubeconfig happens to point at."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kube_config.configured_api_client(None) is None


def test_a_named_kubeconfig_gives_its_cluster(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    api = kube_config.configured_api_client(str(path))
    assert api is not None
    try:
        assert api.configuration.host == "https://127.0.0.1:6443"
    finally:
        kube_config.close_api_client(api)
