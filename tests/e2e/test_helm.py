"""The Helm chart and the examples against the real helm and a real control plane.

- `helm lint` and `helm template` pass with the default values and every example
  values file; the rendered daemon configuration loads with the daemon's own loader.
- values.schema.json and the chart's own checks refuse bad values with a clear message.
- With KEDA's CRDs from the KEDA Go module installed, every rendered manifest and every
  example object passes a server-side dry-run create with strict field validation.
- `helm install` creates the objects. Then, authenticated only as the chart's
  ServiceAccount (a TokenRequest token in a kubeconfig): the daemon's own adapters take
  the leader Lease and write the placeholder Deployment for a GPU workload, while RBAC
  refuses what the chart does not grant; and `autoscaler serve`, configured from the
  chart's ConfigMap and fed by a real Prometheus, takes the Lease, answers KEDA's gRPC
  calls, writes the placeholder Deployment itself and releases the Lease on SIGTERM.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from autoscaler._generated import externalscaler_pb2 as scaler_messages
from autoscaler._generated import externalscaler_pb2_grpc as scaler_services
from autoscaler.adapters import kube
from autoscaler.adapters.leader import LeaderElector, LeaseSettings
from autoscaler.domain import placeholders
from autoscaler.settings import Settings, load_settings
from tests.e2e.keda_crds import install_crds
from tests.harness.cluster import (
    BUILD_ALL,
    BuildError,
    ControlPlane,
    HarnessError,
    bin_dir,
    build_binaries,
    free_port,
    load_versions,
)
from tests.harness.keda import Keda, ensure_keda_binaries
from tests.integration.prometheus_server import (
    EXPORTER_LABELS,
    HISTORY_POINTS,
    HISTORY_STEP_SECONDS,
    HISTORY_TRACE,
    BackfillSeries,
    MetricsExporter,
    PrometheusServer,
    trace_points,
)
from tests.unit.deploy.deploy_files import (
    CHART_DIR,
    REPO_ROOT,
    example_manifest_files,
    example_values_files,
    load_documents,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Names of our own, so that other e2e modules sharing the control plane never collide
# with this one (the PriorityClass is cluster-scoped and named after the release).
NAMESPACE = "pa-helm-e2e"
WORKLOAD_NAMESPACE = "pa-helm-e2e-llm"
DRY_RUN_RELEASE = "pa-dry-run"
INSTALL_RELEASE = "pa-helm"
KEDA_NAMESPACE = "keda"  # the chart's default keda.namespace
TLS_DIR = "/etc/predictive-autoscaler/tls"
VALUES_CASES: list[Path | None] = [None, *example_values_files()]
CHART_KINDS = {
    "Deployment",
    "Service",
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
}


def _values_id(values: Path | None) -> str:
    return "default-values" if values is None else values.name


# ----------------------------------------------------------------------------- helm


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path
    kube_version: str

    def run(self, *args: str | Path, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("HELM_")}
        env |= {
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": str(kubeconfig or self.home / "no-cluster"),
        }
        return subprocess.run(
            [str(self.binary), *map(str, args)], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    def template(self, values: Path | None, *extra: str, release: str = DRY_RUN_RELEASE) -> list[dict[str, Any]]:
        args: list[str | Path] = [
            "template",
            release,
            CHART_DIR,
            "--namespace",
            NAMESPACE,
            "--kube-version",
            self.kube_version,
        ]
        if values is not None:
            args += ["--values", str(values)]
        result = self.run(*args, *extra)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def template_error(self, *extra: str) -> str:
        result = self.run("template", "x", CHART_DIR, "--kube-version", self.kube_version, *extra)
        assert result.returncode != 0, f"helm template accepted {extra}"
        return result.stderr


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm from the harness's cache; built by tests/harness/build_all.sh helm when missing."""
    build_log = tmp_path_factory.mktemp("helm-build") / "build.log"
    with build_log.open("w") as log:
        built = subprocess.run(
            ["bash", str(BUILD_ALL), "helm"], stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=False
        )
    if built.returncode != 0:
        pytest.fail(f"building helm failed (log: {build_log}):\n{build_log.read_text()[-4000:]}", pytrace=False)
    versions = load_versions()
    return Helm(
        binary=bin_dir("helm", versions["HELM_VERSION"]) / "helm",
        home=tmp_path_factory.mktemp("helm-home"),
        kube_version=versions["KUBE_VERSION"].removeprefix("v"),
    )


def _one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    return doc


@pytest.mark.parametrize("values", VALUES_CASES, ids=_values_id)
def test_helm_lint_passes(helm: Helm, values: Path | None) -> None:
    args: list[str | Path] = ["lint", "--strict", CHART_DIR, "--namespace", NAMESPACE]
    args += ["--kube-version", helm.kube_version]
    if values is not None:
        args += ["--values", values]
    result = helm.run(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", VALUES_CASES, ids=_values_id)
def test_helm_template_renders_a_hardened_daemon(helm: Helm, values: Path | None, tmp_path: Path) -> None:
    docs = helm.template(values)
    assert {doc["kind"] for doc in docs} >= CHART_KINDS
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {env["name"] for env in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    assert any(volume["name"] == "tmp" and "emptyDir" in volume for volume in pod["volumes"])

    config_file = tmp_path / "config.yaml"
    config_file.write_text(_one(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    settings = load_settings(str(config_file), environ={})
    assert settings.grpc.port == 9100
    assert settings.http.port == 8080
    assert settings.leader_election.namespace == NAMESPACE


def _settings(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_one(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    return load_settings(str(config_file), environ={})


def test_helm_template_wires_mutual_tls_from_existing_secrets(helm: Helm, tmp_path: Path) -> None:
    docs = helm.template(next(path for path in example_values_files() if path.name == "values-mtls.yaml"))
    settings = _settings(docs, tmp_path)
    assert settings.grpc.tls_cert_file == f"{TLS_DIR}/tls.crt"
    assert settings.grpc.client_ca_file == f"{TLS_DIR}/ca.crt"
    (endpoint,) = settings.prometheus
    assert endpoint.bearer_token_file == "/etc/predictive-autoscaler/prometheus/0-token/token"
    volumes = {v["name"]: v for v in _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "predictive-autoscaler-tls"
    assert {item["key"] for item in volumes["tls"]["secret"]["items"]} == {"tls.crt", "tls.key", "ca.crt"}
    assert volumes["prometheus-0-token"]["secret"]["secretName"] == "prometheus-client"
    assert "Secret" not in {doc["kind"] for doc in docs}  # the operator's own PKI
    references = _one(docs, "ClusterTriggerAuthentication")["spec"]["secretTargetRef"]
    assert {ref["name"] for ref in references} == {"predictive-autoscaler-keda-client"}
    assert _one(docs, "NetworkPolicy")["spec"]["policyTypes"] == ["Ingress"]
    assert {
        rb["metadata"]["namespace"]
        for rb in docs
        if rb["metadata"]["name"].endswith("-workloads") and rb["kind"] == "RoleBinding"
    } == {"llm", "search"}


def test_helm_template_passes_the_engine_tuning_and_http_limits(helm: Helm, tmp_path: Path) -> None:
    docs = helm.template(
        None,
        *("--set", "config.engine.fitWorkers=3", "--set", "config.engine.fullCollectionSeconds=0"),
        *("--set", "config.http.limits.maxConnections=512", "--set", "config.http.limits.idleTimeoutSeconds=5"),
    )
    settings = _settings(docs, tmp_path)
    assert (settings.engine.fit_workers, settings.engine.full_collection_seconds) == (3, 0)
    assert settings.engine.max_targets == 10_000
    limits = settings.http.limits
    assert (limits.max_connections, limits.idle_timeout_seconds, limits.write_timeout_seconds) == (512, 5, 30)


def test_service_monitor_renders_where_the_api_is_served(helm: Helm) -> None:
    docs = helm.template(
        None, "--set", "serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"
    )
    endpoint = _one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    # /metrics needs a token: Prometheus sends its own ServiceAccount's.
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"


# ----------------------------------------------------------------------------- secure defaults


def _secret(docs: list[dict[str, Any]], name: str, namespace: str) -> dict[str, bytes]:
    (doc,) = [
        d
        for d in docs
        if d["kind"] == "Secret" and d["metadata"]["name"] == name and d["metadata"]["namespace"] == namespace
    ]
    return {key: base64.b64decode(value) for key, value in doc["data"].items()}


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, InvalidSignature):
        return False
    return True


def test_default_values_issue_one_ca_for_server_and_keda(helm: Helm, tmp_path: Path) -> None:
    """Without cert-manager the chart generates a CA, the server pair and KEDA's client pair."""
    docs = helm.template(None)
    fullname = f"{DRY_RUN_RELEASE}-predictive-autoscaler"
    settings = _settings(docs, tmp_path)
    assert (settings.grpc.tls_cert_file, settings.grpc.tls_key_file) == (f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key")
    assert settings.grpc.client_ca_file == f"{TLS_DIR}/ca.crt"  # mutual TLS
    assert settings.http.authenticated  # 0.0.0.0 with mode kubernetes

    server = _secret(docs, f"{fullname}-tls", NAMESPACE)
    client = _secret(docs, f"{fullname}-keda-client", KEDA_NAMESPACE)  # where KEDA reads it
    ca = x509.load_pem_x509_certificate(server["ca.crt"])
    assert client["ca.crt"] == server["ca.crt"] == _secret(docs, f"{fullname}-ca", NAMESPACE)["tls.crt"]
    server_cert = x509.load_pem_x509_certificate(server["tls.crt"])
    client_cert = x509.load_pem_x509_certificate(client["tls.crt"])
    assert _issued_by(server_cert, ca) and _issued_by(client_cert, ca)
    names = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{fullname}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)

    volumes = {v["name"]: v for v in _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == f"{fullname}-tls"

    authentication = _one(docs, "ClusterTriggerAuthentication")
    assert authentication["metadata"]["name"] == fullname
    assert {(ref["parameter"], ref["name"], ref["key"]) for ref in authentication["spec"]["secretTargetRef"]} == {
        ("caCert", f"{fullname}-keda-client", "ca.crt"),
        ("tlsClientCert", f"{fullname}-keda-client", "tls.crt"),
        ("tlsClientKey", f"{fullname}-keda-client", "tls.key"),
    }


def test_default_values_let_the_daemon_review_callers_and_render_their_roles(helm: Helm) -> None:
    docs = helm.template(None)
    cluster_rules = _one(docs, "ClusterRole", "-cluster")["rules"]
    reviews = {(rule["apiGroups"][0], rule["resources"][0]): rule["verbs"] for rule in cluster_rules}
    assert reviews[("authentication.k8s.io", "tokenreviews")] == ["create"]
    assert reviews[("authorization.k8s.io", "subjectaccessreviews")] == ["create"]
    assert _one(docs, "ClusterRole", "-metrics-reader")["rules"] == [
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}
    ]
    assert _one(docs, "ClusterRole", "-inspector")["rules"] == [
        {"nonResourceURLs": ["/predictive-autoscaler/*", "/metrics"], "verbs": ["get"]}
    ]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions with In/NotIn/Exists)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
    return True


def _admits(policy: dict[str, Any], *, namespace: str, pod_labels: dict[str, str], port: str) -> bool:
    """Whether the policy's ingress rules let a pod with these labels in that namespace reach `port`."""
    namespace_labels = {"kubernetes.io/metadata.name": namespace}
    for rule in policy["spec"]["ingress"]:
        if not any(entry["port"] == port for entry in rule["ports"]):
            continue
        for peer in rule["from"]:
            # A peer with only a podSelector means the policy's own namespace.
            in_namespace = (
                _selects(peer["namespaceSelector"], namespace_labels)
                if "namespaceSelector" in peer
                else namespace == policy["metadata"]["namespace"]
            )
            if in_namespace and _selects(peer.get("podSelector", {}), pod_labels):
                return True
    return False


def test_network_policy_admits_only_kedas_pods_on_the_grpc_port(helm: Helm) -> None:
    """The rendered rules, evaluated here: the test control plane runs no CNI, so no
    NetworkPolicy is enforced in it and a connection attempt would prove nothing.
    """
    policy = _one(helm.template(None), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    operator = {"app.kubernetes.io/name": "keda-operator"}
    metrics_server = {"app.kubernetes.io/name": "keda-operator-metrics-apiserver"}
    assert _admits(policy, namespace=KEDA_NAMESPACE, pod_labels=operator, port="grpc")
    assert _admits(policy, namespace=KEDA_NAMESPACE, pod_labels=metrics_server, port="grpc")
    assert not _admits(policy, namespace=KEDA_NAMESPACE, pod_labels={"app": "other"}, port="grpc")
    assert not _admits(policy, namespace="llm", pod_labels=operator, port="grpc")  # KEDA's labels, elsewhere
    assert not _admits(policy, namespace=NAMESPACE, pod_labels={}, port="grpc")
    assert not _admits(policy, namespace="monitoring", pod_labels={}, port="grpc")
    assert _admits(policy, namespace="monitoring", pod_labels={"app": "prometheus"}, port="http")
    assert not _admits(policy, namespace=KEDA_NAMESPACE, pod_labels=operator, port="http")
    assert not _admits(policy, namespace="llm", pod_labels={}, port="http")


def test_cert_manager_issues_the_certificates_where_it_is_installed(helm: Helm) -> None:
    docs = helm.template(None, "--api-versions", "cert-manager.io/v1", "--set", f"keda.namespace={NAMESPACE}")
    assert "Secret" not in {doc["kind"] for doc in docs}
    certificates = {doc["metadata"]["name"]: doc["spec"] for doc in docs if doc["kind"] == "Certificate"}
    fullname = f"{DRY_RUN_RELEASE}-predictive-autoscaler"
    assert certificates[f"{fullname}-ca"]["isCA"] is True
    issuer = {"name": f"{fullname}-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert certificates[f"{fullname}-tls"]["issuerRef"] == issuer
    assert certificates[f"{fullname}-keda-client"]["issuerRef"] == issuer
    assert certificates[f"{fullname}-keda-client"]["usages"][0] == "client auth"


def test_cert_manager_with_a_cluster_issuer_serves_any_namespace(helm: Helm) -> None:
    issuer = {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    args = [f"--set=tls.certManager.issuerRef.{key}={value}" for key, value in issuer.items()]
    docs = helm.template(None, "--api-versions", "cert-manager.io/v1", *args)
    assert "Issuer" not in {doc["kind"] for doc in docs}
    certificates = {doc["metadata"]["namespace"]: doc["spec"] for doc in docs if doc["kind"] == "Certificate"}
    assert set(certificates) == {NAMESPACE, KEDA_NAMESPACE}
    assert all(spec["issuerRef"] == issuer for spec in certificates.values())


@pytest.mark.parametrize(
    ("mode", "client_ca", "parameters"),
    [("tls", False, {"caCert"}), ("insecure-plaintext", False, None)],
)
def test_weaker_tls_is_asked_for_by_name(
    helm: Helm, tmp_path: Path, mode: str, client_ca: bool, parameters: set[str] | None
) -> None:
    docs = helm.template(None, "--set", f"tls.mode={mode}")
    settings = _settings(docs, tmp_path)
    assert bool(settings.grpc.client_ca_file) is client_ca
    assert bool(settings.grpc.tls_cert_file) is (mode != "insecure-plaintext")
    authentications = [doc for doc in docs if doc["kind"] == "ClusterTriggerAuthentication"]
    if parameters is None:
        assert not authentications and "Secret" not in {doc["kind"] for doc in docs}
    else:
        (authentication,) = authentications
        assert {ref["parameter"] for ref in authentication["spec"]["secretTargetRef"]} == parameters


BAD_VALUES = [
    (("--set", "replicaCount=-1"), "at '/replicaCount': minimum: got -1, want 1"),
    (("--set", "replicas=3"), "additional properties 'replicas' not allowed"),
    (("--set", "tls.secret=x"), "at '/tls': additional properties 'secret' not allowed"),
    (("--set", "config.actuator.mode=sometimes"), "at '/config/actuator/mode': value must be one of"),
    (("--set", "placeholders.priorityClass.value=5"), "at '/placeholders/priorityClass/value': maximum"),
    (("--set", "config.leaderElection.renewPeriodSeconds=20"), "renewPeriodSeconds must be shorter"),
    (("--set", "replicaCount=3", "--set", "config.leaderElection.enabled=false"), "needs config.leaderElection"),
    (("--set", "tls.mode=off"), "at '/tls/mode': value must be one of 'mutual-tls', 'tls', 'insecure-plaintext'"),
    (("--set", "tls.source=existing"), "tls.source existing needs tls.existingSecret"),
    (
        ("--set", "tls.source=existing", "--set", "tls.existingSecret=x"),
        "tls.source existing needs tls.existingClientSecret",
    ),
    (("--set", "tls.source=cert-manager"), "does not serve cert-manager.io/v1"),
    (
        ("--namespace", "elsewhere", "--set", "tls.source=cert-manager", "--api-versions", "cert-manager.io/v1"),
        "must be installed in keda.namespace (keda)",
    ),
    (("--set", "config.http.auth.mode=off"), "at '/config/http/auth/mode': value must be one of"),
    (("--set", "config.http.limits.idleTimeoutSeconds=0"), "at '/config/http/limits/idleTimeoutSeconds'"),
    (("--set", "serviceMonitor.enabled=true"), "does not serve monitoring.coreos.com/v1 ServiceMonitor"),
    (("--set", "service.httpPort=9100"), "service.grpcPort and service.httpPort must differ"),
    (("--set", "config.engine.fullCollectionSeconds=-1"), "at '/config/engine/fullCollectionSeconds': minimum"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[" ".join(args) for args, _ in BAD_VALUES])
def test_chart_rejects_bad_values_with_a_clear_message(helm: Helm, args: tuple[str, ...], message: str) -> None:
    assert message in helm.template_error(*args)


# ----------------------------------------------------------------------------- cluster


def _api_message(exc: ApiException) -> str:
    """The API server's own message (the Status object's), else the raw body."""
    try:
        return str(json.loads(exc.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"HTTP {exc.status} {exc.reason}: {exc.body}"


@dataclass(frozen=True)
class Cluster:
    plane: ControlPlane
    api: client.ApiClient
    dynamic: Any  # kubernetes.dynamic.DynamicClient, which is untyped

    def resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def read(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        return found

    def dry_run_create(self, doc: dict[str, Any], namespace: str) -> None:
        resource = self.resource(doc["apiVersion"], doc["kind"])
        target_namespace = (doc["metadata"].get("namespace") or namespace) if resource.namespaced else None
        resource.create(
            body=doc, namespace=target_namespace, dry_run="All", query_params=[("fieldValidation", "Strict")]
        )


def _ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:
            raise


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[Cluster]:
    api = control_plane.api_client()
    for namespace in (NAMESPACE, WORKLOAD_NAMESPACE, KEDA_NAMESPACE, "llm", "search"):
        _ensure_namespace(api, namespace)
    install_crds(api)
    dynamic_client: Any = DynamicClient
    try:
        yield Cluster(control_plane, api, dynamic_client(api))
    finally:
        close: Any = api.close
        close()


@pytest.mark.parametrize("values", VALUES_CASES, ids=_values_id)
def test_rendered_chart_passes_server_side_dry_run(helm: Helm, cluster: Cluster, values: Path | None) -> None:
    for doc in helm.template(values):
        try:
            cluster.dry_run_create(doc, NAMESPACE)
        except DynamicApiError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} refused: {_api_message(exc)}")


@pytest.mark.parametrize("path", example_manifest_files(), ids=lambda p: p.name)
def test_example_objects_validate_against_the_keda_crds(cluster: Cluster, path: Path) -> None:
    docs = load_documents(path)
    assert "ScaledObject" in {doc["kind"] for doc in docs}
    for doc in docs:
        try:
            cluster.dry_run_create(doc, "llm")
        except DynamicApiError as exc:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']} refused: {_api_message(exc)}")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda so: so["spec"].update(scaleTargetRefs=so["spec"].pop("scaleTargetRef")), "scaleTargetRef"),
        (lambda so: so["spec"].update(minReplicaCount="one"), "minReplicaCount"),
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(capacityPerReplica=8), "capacityPerReplica"),
    ],
    ids=["misspelt-field", "wrong-type", "non-string-metadata"],
)
def test_keda_crds_really_validate(cluster: Cluster, change: Any, message: str) -> None:
    """Guards the test above: the same dry run refuses a broken ScaledObject."""
    path = next(p for p in example_manifest_files() if p.name == "request-rate.yaml")
    scaled_object = next(doc for doc in load_documents(path) if doc["kind"] == "ScaledObject")
    change(scaled_object)
    with pytest.raises(DynamicApiError) as refused:
        cluster.dry_run_create(scaled_object, "llm")
    assert refused.value.status in (400, 422)
    assert message in _api_message(refused.value)


# ----------------------------------------------------------------------------- install


@dataclass(frozen=True)
class Release:
    name: str
    fullname: str
    docs: list[dict[str, Any]]
    install_args: list[str]


@pytest.fixture(scope="module")
def release(helm: Helm, cluster: Cluster) -> Iterator[Release]:
    args = ["--namespace", NAMESPACE, "--set", f"rbac.targetNamespaces={{{WORKLOAD_NAMESPACE}}}"]
    args += ["--set", f"config.limits.placeholderNamespaces={{{WORKLOAD_NAMESPACE}}}"]
    installed = helm.run("install", INSTALL_RELEASE, CHART_DIR, *args, kubeconfig=cluster.plane.kubeconfig)
    assert installed.returncode == 0, installed.stderr
    try:
        manifest = helm.run(
            "get", "manifest", INSTALL_RELEASE, "--namespace", NAMESPACE, kubeconfig=cluster.plane.kubeconfig
        )
        assert manifest.returncode == 0, manifest.stderr
        docs = [doc for doc in yaml.safe_load_all(manifest.stdout) if doc]
        yield Release(INSTALL_RELEASE, f"{INSTALL_RELEASE}-predictive-autoscaler", docs, args)
    finally:
        helm.run("uninstall", INSTALL_RELEASE, "--namespace", NAMESPACE, kubeconfig=cluster.plane.kubeconfig)


def test_helm_install_creates_every_object(helm: Helm, cluster: Cluster, release: Release) -> None:
    status = helm.run(
        "status", release.name, "--namespace", NAMESPACE, "-o", "json", kubeconfig=cluster.plane.kubeconfig
    )
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
    installed_kinds = CHART_KINDS | {"PriorityClass", "Role", "RoleBinding", "PodDisruptionBudget"}
    assert {doc["kind"] for doc in release.docs} >= installed_kinds
    for doc in release.docs:
        namespaced = cluster.resource(doc["apiVersion"], doc["kind"]).namespaced
        namespace = doc["metadata"].get("namespace", NAMESPACE) if namespaced else None
        live = cluster.read(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], namespace)
        assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    fullname = release.fullname
    assert cluster.read("apps/v1", "Deployment", fullname, NAMESPACE)["spec"]["replicas"] == 2
    priority_class = cluster.read("scheduling.k8s.io/v1", "PriorityClass", f"{fullname}-placeholder")
    assert (priority_class["value"], priority_class["preemptionPolicy"]) == (-10, "Never")
    ports = cluster.read("v1", "Service", fullname, NAMESPACE)["spec"]["ports"]
    assert {(port["name"], port["port"]) for port in ports} == {("grpc", 9100), ("http", 8080)}
    dashboard = cluster.read("v1", "ConfigMap", f"{fullname}-dashboard", NAMESPACE)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    binding = cluster.read("rbac.authorization.k8s.io/v1", "RoleBinding", f"{fullname}-workloads", WORKLOAD_NAMESPACE)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": fullname, "namespace": NAMESPACE}]


def _service_account_kubeconfig(cluster: Cluster, release: Release, path: Path) -> Path:
    """A kubeconfig holding a short-lived token of the chart's ServiceAccount."""
    response = client.CoreV1Api(cluster.api).create_namespaced_service_account_token(
        release.fullname,
        NAMESPACE,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    )
    assert response.status is not None
    admin = yaml.safe_load(cluster.plane.kubeconfig.read_text())
    cluster_name = admin["clusters"][0]["name"]
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "chart-sa", "user": {"token": response.status.token}}],
        "contexts": [{"name": "chart-sa", "context": {"cluster": cluster_name, "user": "chart-sa"}}],
        "current-context": "chart-sa",
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    return path


def _api_client(kubeconfig: Path) -> client.ApiClient:
    new_client: Any = config.new_client_from_config  # the client's config module is untyped
    api: client.ApiClient = new_client(config_file=str(kubeconfig))
    return api


def _serving_workload() -> dict[str, Any]:
    path = next(p for p in example_manifest_files() if p.name == "vllm-queue-and-kv-cache.yaml")
    return next(doc for doc in load_documents(path) if doc["kind"] == "Deployment")


def _forbidden(call: Any) -> bool:
    try:
        call()
    except ApiException as exc:
        return bool(exc.status == 403)
    return False


def test_daemon_adapters_work_with_the_charts_service_account(
    cluster: Cluster, release: Release, tmp_path: Path
) -> None:
    workload = _serving_workload()
    name = workload["metadata"]["name"]
    cluster.resource("apps/v1", "Deployment").create(body=workload, namespace=WORKLOAD_NAMESPACE)
    daemon_config = yaml.safe_load(
        cluster.read("v1", "ConfigMap", f"{release.fullname}-config", NAMESPACE)["data"]["config.yaml"]
    )
    election = daemon_config["leaderElection"]
    sa_api = _api_client(_service_account_kubeconfig(cluster, release, tmp_path / "sa.kubeconfig"))
    try:
        elector = LeaderElector(
            client.CoordinationV1Api(sa_api),
            LeaseSettings(namespace=election["namespace"], identity="helm-e2e-0", name=election["leaseName"]),
        )
        assert elector.try_acquire_or_renew(), elector.last_error
        lease = cluster.read("coordination.k8s.io/v1", "Lease", election["leaseName"], NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "helm-e2e-0"

        actuator = kube.KubeActuator(
            sa_api,
            kube.ActuatorSettings(
                mode="placeholders", priority_class_name=daemon_config["actuator"]["priorityClassName"]
            ),
        )
        group = kube.PlaceholderGroup(WORKLOAD_NAMESPACE, name)
        assert actuator.apply_buffer(group, 2, may_write=elector.is_leader).action == "created"
        assert actuator.apply_buffer(group, 3, may_write=elector.is_leader).action == "updated"
        assert actuator.apply_buffer(group, 3, may_write=elector.is_leader).action == "unchanged"

        placeholder = cluster.read("apps/v1", "Deployment", placeholders.placeholder_name(name), WORKLOAD_NAMESPACE)
        assert placeholder["spec"]["replicas"] == 3
        pod = placeholder["spec"]["template"]["spec"]
        assert pod["priorityClassName"] == f"{release.fullname}-placeholder"
        assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"

        # Least privilege: nothing beyond the rules in deploy/rbac/rules.yaml.
        sa_core, sa_apps = client.CoreV1Api(sa_api), client.AppsV1Api(sa_api)
        sa_scheduling = client.SchedulingV1Api(sa_api)
        assert _forbidden(lambda: sa_core.list_namespaced_secret(WORKLOAD_NAMESPACE))
        assert _forbidden(lambda: sa_apps.delete_namespaced_deployment(name, WORKLOAD_NAMESPACE))
        assert _forbidden(lambda: sa_apps.read_namespaced_deployment(release.fullname, NAMESPACE))
        assert _forbidden(lambda: sa_scheduling.delete_priority_class(f"{release.fullname}-placeholder"))
        assert elector.release()
    finally:
        close: Any = sa_api.close
        close()


def test_service_account_token_is_the_charts(cluster: Cluster, release: Release, tmp_path: Path) -> None:
    """The kubeconfig above authenticates as the chart's ServiceAccount, not as the admin."""
    kubeconfig = yaml.safe_load(_service_account_kubeconfig(cluster, release, tmp_path / "sa").read_text())
    payload = kubeconfig["users"][0]["user"]["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == f"system:serviceaccount:{NAMESPACE}:{release.fullname}"


# ----------------------------------------------------------------------------- the daemon


@dataclass(frozen=True)
class DemandSource:
    prometheus_url: str
    query: str


@pytest.fixture(scope="module")
def demand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemandSource]:
    """A real Prometheus holding five hours of a real trace and scraping its live value."""
    metric = "pa_helm_e2e_requests_waiting"
    end = math.floor(time.time() / HISTORY_STEP_SECONDS) * HISTORY_STEP_SECONDS - HISTORY_STEP_SECONDS
    points = trace_points(HISTORY_TRACE, end=end, step_seconds=HISTORY_STEP_SECONDS, count=HISTORY_POINTS)
    with MetricsExporter() as exporter:
        exporter.set_gauge(metric, points[-1][1])
        server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), scrape_target=exporter.address)
        server.backfill([BackfillSeries(metric, EXPORTER_LABELS, points)])
        with server:
            yield DemandSource(server.url, f"sum({metric})")


def _lease_holder(cluster: Cluster, name: str) -> str:
    try:
        lease = cluster.read("coordination.k8s.io/v1", "Lease", name, NAMESPACE)
    except DynamicApiError:
        return ""
    return str(lease["spec"].get("holderIdentity") or "")


def _wait_for(what: str, check: Any, timeout_s: float, daemon: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"the daemon exited {daemon.returncode}:\n{log.read_text()[-4000:]}"
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}; daemon log:\n{log.read_text()[-4000:]}")


def _installed_secret(cluster: Cluster, name: str, namespace: str) -> dict[str, bytes]:
    data = cluster.read("v1", "Secret", name, namespace)["data"]
    return {key: base64.b64decode(value) for key, value in data.items()}


def _token_of_new_service_account(cluster: Cluster, name: str) -> str:
    core: Any = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": name}})
    answer = core.create_namespaced_service_account_token(name, NAMESPACE, {"spec": {"expirationSeconds": 3600}})
    return str(answer.status.token)


def _assert_http_port_authenticates(cluster: Cluster, release: Release, http_port: int) -> None:
    """401 without a token, 403 without the inspector role, 200 with it; health stays open."""
    stranger = _token_of_new_service_account(cluster, "pa-helm-e2e-stranger")
    inspector = _token_of_new_service_account(cluster, "pa-helm-e2e-inspector")
    rbac: Any = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "pa-helm-e2e-inspector"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{release.fullname}-inspector",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "pa-helm-e2e-inspector", "namespace": NAMESPACE}],
        }
    )

    def status(path: str, token: str | None) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    try:
        assert status("/healthz", None) == 200
        assert status("/api/v1/targets", None) == 401
        assert status("/metrics", None) == 401
        assert status("/api/v1/targets", "not-a-token") == 401
        assert status("/api/v1/targets", stranger) == 403
        deadline = time.monotonic() + 30  # the new binding reaches the authoriser; denials are cached 10 s
        while status("/api/v1/targets", inspector) != 200:
            assert time.monotonic() < deadline, "the inspector role never admitted its ServiceAccount"
            time.sleep(1)
        assert status("/metrics", inspector) == 200
    finally:
        rbac.delete_cluster_role_binding("pa-helm-e2e-inspector")


def test_upgrade_keeps_the_generated_certificates(helm: Helm, cluster: Cluster, release: Release) -> None:
    """KEDA holds the client pair and trusts the CA: `helm upgrade` must not replace them."""
    names = [
        (f"{release.fullname}-ca", NAMESPACE),
        (f"{release.fullname}-tls", NAMESPACE),
        (f"{release.fullname}-keda-client", KEDA_NAMESPACE),
    ]
    before = [_installed_secret(cluster, name, namespace) for name, namespace in names]
    upgraded = helm.run(
        "upgrade", release.name, CHART_DIR, *release.install_args, "--set", "config.log.level=debug",
        kubeconfig=cluster.plane.kubeconfig,
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    assert [_installed_secret(cluster, name, namespace) for name, namespace in names] == before


@contextlib.contextmanager
def _chart_daemon(
    tmp_path: Path, daemon_config: dict[str, Any], *, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    """`autoscaler serve` here on the chart's configuration, with the chart's TLS files in
    `tmp_path` (tls.crt, tls.key, ca.crt) and `env` added: (process, gRPC port, HTTP port, log).
    Stopped with SIGTERM on exit (killed after 30 s), so the caller can check its exit code."""
    daemon_config["grpc"] |= {
        "tlsCertFile": str(tmp_path / "tls.crt"),
        "tlsKeyFile": str(tmp_path / "tls.key"),
        "clientCaFile": str(tmp_path / "ca.crt"),
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(daemon_config))
    grpc_port, http_port = free_port(), free_port()
    # No admin credentials reach the daemon: only the kubeconfig in its configuration.
    environment = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    environment |= env | {"PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "daemon.log"
    command = [sys.executable, "-m", "autoscaler", "serve", "--config", str(config_file), "--host", "127.0.0.1"]
    command += ["--grpc-port", str(grpc_port), "--http-port", str(http_port), "--log-format", "text"]
    with log.open("wb") as output:
        daemon = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        yield daemon, grpc_port, http_port, log
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def test_daemon_serves_keda_and_writes_placeholders_as_the_charts_service_account(
    cluster: Cluster, release: Release, demand: DemandSource, tmp_path: Path
) -> None:
    """`autoscaler serve` outside the cluster, configured by the chart, holding only the chart's RBAC.

    It serves gRPC with the certificates `helm install` generated and admits only a client
    holding KEDA's pair; its HTTP port answers 401 without a token and 403 to a
    ServiceAccount without the documented RBAC. The port listens on loopback here, so
    `authenticateLoopback` stands in for the pod's 0.0.0.0.
    """
    workload = _serving_workload()
    workload["metadata"]["name"] = name = "llama-8b-daemon"
    workload["spec"]["selector"]["matchLabels"] = workload["spec"]["template"]["metadata"]["labels"] = {"app": name}
    cluster.resource("apps/v1", "Deployment").create(body=workload, namespace=WORKLOAD_NAMESPACE)

    daemon_config = yaml.safe_load(
        cluster.read("v1", "ConfigMap", f"{release.fullname}-config", NAMESPACE)["data"]["config.yaml"]
    )
    daemon_config["prometheus"]["endpoints"] = [{"name": "default", "url": demand.prometheus_url}]
    daemon_config["actuator"]["kubeconfig"] = str(_service_account_kubeconfig(cluster, release, tmp_path / "sa"))
    server_pair = _installed_secret(cluster, f"{release.fullname}-tls", NAMESPACE)
    keda_pair = _installed_secret(cluster, f"{release.fullname}-keda-client", KEDA_NAMESPACE)
    for key, value in server_pair.items():
        (tmp_path / key).write_bytes(value)
    daemon_config["http"]["auth"]["authenticateLoopback"] = True
    pod = {"POD_NAME": "helm-e2e-daemon", "POD_NAMESPACE": NAMESPACE}
    with _chart_daemon(tmp_path, daemon_config, env=pod) as (daemon, grpc_port, http_port, log):
        lease_name = daemon_config["leaderElection"]["leaseName"]
        _wait_for(
            "the daemon to take the Lease",
            lambda: _lease_holder(cluster, lease_name).startswith("helm-e2e-daemon"),
            60,
            daemon,
            log,
        )

        metadata = {
            "scalerAddress": f"127.0.0.1:{grpc_port}",
            "query": demand.query,
            "capacityPerReplica": "5",
            "step": "60s",
            "historyWindow": "5h",
            "leadTime": "120s",
            "nodeLeadTime": "300s",
            "maxBufferReplicas": "2",
            "workloadName": name,
        }
        reference = scaler_messages.ScaledObjectRef(name=name, namespace=WORKLOAD_NAMESPACE, scalerMetadata=metadata)
        _assert_http_port_authenticates(cluster, release, http_port)
        server_name = f"{release.fullname}.{NAMESPACE}.svc"  # a SAN of the generated server certificate
        options = [("grpc.ssl_target_name_override", server_name)]
        without_pair = grpc.ssl_channel_credentials(root_certificates=keda_pair["ca.crt"])
        with grpc.secure_channel(f"127.0.0.1:{grpc_port}", without_pair, options=options) as channel:
            anonymous: Any = scaler_services.ExternalScalerStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                anonymous.IsActive(reference, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed: no client pair
        keda_credentials = grpc.ssl_channel_credentials(
            root_certificates=keda_pair["ca.crt"],
            private_key=keda_pair["tls.key"],
            certificate_chain=keda_pair["tls.crt"],
        )
        with grpc.secure_channel(f"127.0.0.1:{grpc_port}", keda_credentials, options=options) as channel:
            stub_class: Any = scaler_services.ExternalScalerStub  # generated, untyped
            stub = stub_class(channel)
            (spec,) = stub.GetMetricSpec(reference, timeout=10).metricSpecs

            def planned_replicas() -> float | None:
                request = scaler_messages.GetMetricsRequest(scaledObjectRef=reference, metricName=spec.metricName)
                try:
                    (value,) = stub.GetMetrics(request, timeout=10).metricValues
                except grpc.RpcError:
                    return None  # still warming up
                return float(value.metricValueFloat or value.metricValue)

            assert _wait_for("a planned replica count", planned_replicas, 90, daemon, log) >= 1

        def placeholder() -> dict[str, Any] | None:
            try:
                return cluster.read("apps/v1", "Deployment", placeholders.placeholder_name(name), WORKLOAD_NAMESPACE)
            except DynamicApiError:
                return None

        written = _wait_for("the placeholder Deployment", placeholder, 60, daemon, log)
        assert written["spec"]["template"]["spec"]["priorityClassName"] == f"{release.fullname}-placeholder"
        appliers = {entry["manager"] for entry in written["metadata"]["managedFields"] if entry["operation"] == "Apply"}
        assert appliers == {"predictive-autoscaler"}
        assert 0 <= written["spec"]["replicas"] <= 2
    assert daemon.returncode == 0, log.read_text()[-4000:]
    assert _lease_holder(cluster, lease_name) == "", "the daemon did not release the Lease on SIGTERM"


# ----------------------------------------------------------------------------- real KEDA


@pytest.fixture(scope="module")
def keda_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own running KEDA's operator and adapter: the adapter serves on
    loopback, which needs aggregator routing off (the shared control plane has it on).
    """
    log = tmp_path_factory.mktemp("keda-build") / "build.log"
    try:
        keda_binaries = ensure_keda_binaries(log_file=log)
        binaries = build_binaries()
    except BuildError as error:
        pytest.fail(f"building KEDA or the control plane failed (log {log}):\n{error}", pytrace=False)
    plane = ControlPlane(binaries, workdir=tmp_path_factory.mktemp("keda-plane"), aggregator_routing=False)
    keda = Keda(plane, keda_binaries, tmp_path_factory.mktemp("keda"))
    try:
        plane.start()
        with plane.api_client() as api:
            install_crds(api, keda_binaries.version)
            for namespace in (NAMESPACE, WORKLOAD_NAMESPACE):
                _ensure_namespace(api, namespace)
        keda.start()
        yield plane
    except HarnessError as error:
        pytest.fail(f"KEDA failed to start: {error}\n{keda.logs()}", pytrace=False)
    finally:
        keda.stop()
        plane.stop()


def _grpc_calls_from(http_port: int, method: str) -> float:
    """Successful external-scaler calls of `method`, from the daemon's own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    prefix = "predictive_autoscaler_grpc_requests_total{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(prefix) and f'method="{method}"' in line and 'code="OK"' in line
    )


def test_keda_reaches_the_scaler_over_mutual_tls_through_the_cluster_trigger_authentication(
    helm: Helm, keda_plane: ControlPlane, demand: DemandSource, tmp_path: Path
) -> None:
    """Default values: real KEDA reads the chart's ClusterTriggerAuthentication (caCert,
    tlsClientCert, tlsClientKey from the chart-generated Secret in its own namespace) and
    calls `autoscaler serve`, which holds the chart's server pair and requires a client pair.

    KEDA runs outside the cluster and dials the daemon on loopback as `localhost`, so the
    install adds that name to the server certificate (`tls.extraDnsNames`).
    """
    release = "pa-keda"
    fullname = f"{release}-predictive-autoscaler"
    installed = helm.run(
        "install", release, CHART_DIR, "--namespace", NAMESPACE, "--set", "tls.extraDnsNames={localhost}",
        "--set", "config.actuator.mode=off", kubeconfig=keda_plane.kubeconfig,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    with keda_plane.api_client() as api:
        core: Any = client.CoreV1Api(api)
        custom: Any = client.CustomObjectsApi(api)
        authentication = custom.get_cluster_custom_object(
            "keda.sh", "v1alpha1", "clustertriggerauthentications", fullname
        )
        assert {ref["parameter"] for ref in authentication["spec"]["secretTargetRef"]} == {
            "caCert",
            "tlsClientCert",
            "tlsClientKey",
        }
        server_pair = core.read_namespaced_secret(f"{fullname}-tls", NAMESPACE).data
        for key, value in server_pair.items():
            (tmp_path / key).write_bytes(base64.b64decode(value))
        daemon_config = yaml.safe_load(
            core.read_namespaced_config_map(f"{fullname}-config", NAMESPACE).data["config.yaml"]
        )
        daemon_config["prometheus"]["endpoints"] = [{"name": "default", "url": demand.prometheus_url}]
        assert daemon_config["grpc"]["clientCaFile"]  # mutual TLS by default
        with _chart_daemon(tmp_path, daemon_config, env={}) as (daemon, grpc_port, http_port, log):

            def serving() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2) as response:
                        return int(response.status) == 200
                except OSError:
                    return False

            _wait_for("the daemon's HTTP port", serving, 60, daemon, log)
            labels = {"app": "llm"}
            client.AppsV1Api(api).create_namespaced_deployment(
                WORKLOAD_NAMESPACE,
                {
                    "metadata": {"name": "llm"},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": "server", "image": "registry.k8s.io/pause:3.10"}]},
                        },
                    },
                },
            )
            trigger = {
                "type": "external",
                "metadata": {
                    "scalerAddress": f"localhost:{grpc_port}",
                    "enableTLS": "true",
                    "query": demand.query,
                    "capacityPerReplica": "5",
                    "step": "60s",
                    "historyWindow": "5h",
                    "leadTime": "120s",
                },
                "authenticationRef": {"kind": "ClusterTriggerAuthentication", "name": fullname},
            }
            scaled_object = {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": "llm"},
                "spec": {"scaleTargetRef": {"name": "llm"}, "pollingInterval": 5, "triggers": [trigger]},
            }
            custom.create_namespaced_custom_object(
                "keda.sh", "v1alpha1", WORKLOAD_NAMESPACE, "scaledobjects", scaled_object
            )

            def ready() -> bool:
                found = custom.get_namespaced_custom_object(
                    "keda.sh", "v1alpha1", WORKLOAD_NAMESPACE, "scaledobjects", "llm"
                )
                conditions = found.get("status", {}).get("conditions", [])
                return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

            _wait_for("KEDA to mark the ScaledObject Ready", ready, 120, daemon, log)
            _wait_for(
                "KEDA's GetMetricSpec over mutual TLS",
                lambda: _grpc_calls_from(http_port, "GetMetricSpec") > 0,
                60,
                daemon,
                log,
            )
            _wait_for(
                "KEDA's IsActive polls over mutual TLS",
                lambda: _grpc_calls_from(http_port, "IsActive") > 0,
                60,
                daemon,
                log,
            )
            hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(
                "keda-hpa-llm", WORKLOAD_NAMESPACE
            )
            assert hpa.spec.metrics[0].external is not None  # KEDA built it from our GetMetricSpec answer
