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
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from autoscaler._generated import externalscaler_pb2 as scaler_messages
from autoscaler._generated import externalscaler_pb2_grpc as scaler_services
from autoscaler.adapters import kube
from autoscaler.adapters.leader import LeaderElector, LeaseSettings
from autoscaler.settings import load_settings
from tests.e2e.keda_crds import install_crds
from tests.harness.cluster import BUILD_ALL, ControlPlane, bin_dir, free_port, load_versions
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


def test_helm_template_wires_mutual_tls(helm: Helm, tmp_path: Path) -> None:
    docs = helm.template(next(path for path in example_values_files() if path.name == "values-mtls.yaml"))
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_one(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    settings = load_settings(str(config_file), environ={})
    assert settings.grpc.tls_cert_file == "/etc/predictive-autoscaler/tls/tls.crt"
    assert settings.grpc.client_ca_file == "/etc/predictive-autoscaler/client-ca/ca.crt"
    (endpoint,) = settings.prometheus
    assert endpoint.bearer_token_file == "/etc/predictive-autoscaler/prometheus/0-token/token"
    volumes = {v["name"]: v for v in _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "predictive-autoscaler-tls"
    assert volumes["client-ca"]["secret"]["secretName"] == "predictive-autoscaler-keda-ca"
    assert volumes["prometheus-0-token"]["secret"]["secretName"] == "prometheus-client"
    assert _one(docs, "NetworkPolicy")["spec"]["policyTypes"] == ["Ingress"]
    assert {
        rb["metadata"]["namespace"]
        for rb in docs
        if rb["metadata"]["name"].endswith("-workloads") and rb["kind"] == "RoleBinding"
    } == {"llm", "search"}


def test_helm_template_passes_the_grpc_server_and_engine_tuning(helm: Helm, tmp_path: Path) -> None:
    docs = helm.template(
        None,
        "--set",
        "config.grpc.server=grpcio",
        "--set",
        "config.engine.fitWorkers=3",
        "--set",
        "config.engine.fullCollectionSeconds=0",
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_one(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    settings = load_settings(str(config_file), environ={})
    assert settings.grpc.server == "grpcio"
    assert (settings.engine.fit_workers, settings.engine.full_collection_seconds) == (3, 0)
    assert settings.engine.max_targets == 10_000


def test_service_monitor_renders_where_the_api_is_served(helm: Helm) -> None:
    docs = helm.template(
        None, "--set", "serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"
    )
    endpoint = _one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


BAD_VALUES = [
    (("--set", "replicaCount=-1"), "at '/replicaCount': minimum: got -1, want 1"),
    (("--set", "replicas=3"), "additional properties 'replicas' not allowed"),
    (("--set", "tls.secret=x"), "at '/tls': additional properties 'secret' not allowed"),
    (("--set", "config.actuator.mode=sometimes"), "at '/config/actuator/mode': value must be one of"),
    (("--set", "placeholders.priorityClass.value=5"), "at '/placeholders/priorityClass/value': maximum"),
    (("--set", "config.leaderElection.renewPeriodSeconds=20"), "renewPeriodSeconds must be shorter"),
    (("--set", "replicaCount=3", "--set", "config.leaderElection.enabled=false"), "needs config.leaderElection"),
    (("--set", "tls.enabled=true"), "tls.enabled=true needs tls.existingSecret"),
    (("--set", "serviceMonitor.enabled=true"), "does not serve monitoring.coreos.com/v1 ServiceMonitor"),
    (("--set", "service.httpPort=9100"), "service.grpcPort and service.httpPort must differ"),
    (("--set", "config.grpc.server=fast"), "at '/config/grpc/server': value must be one of"),
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
    for namespace in (NAMESPACE, WORKLOAD_NAMESPACE, "llm", "search"):
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


@pytest.fixture(scope="module")
def release(helm: Helm, cluster: Cluster) -> Iterator[Release]:
    args = ["--namespace", NAMESPACE, "--set", f"rbac.targetNamespaces={{{WORKLOAD_NAMESPACE}}}"]
    installed = helm.run("install", INSTALL_RELEASE, CHART_DIR, *args, kubeconfig=cluster.plane.kubeconfig)
    assert installed.returncode == 0, installed.stderr
    try:
        manifest = helm.run(
            "get", "manifest", INSTALL_RELEASE, "--namespace", NAMESPACE, kubeconfig=cluster.plane.kubeconfig
        )
        assert manifest.returncode == 0, manifest.stderr
        docs = [doc for doc in yaml.safe_load_all(manifest.stdout) if doc]
        yield Release(INSTALL_RELEASE, f"{INSTALL_RELEASE}-predictive-autoscaler", docs)
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

        placeholder = cluster.read("apps/v1", "Deployment", kube.placeholder_name(name), WORKLOAD_NAMESPACE)
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


def test_daemon_serves_keda_and_writes_placeholders_as_the_charts_service_account(
    cluster: Cluster, release: Release, demand: DemandSource, tmp_path: Path
) -> None:
    """`autoscaler serve` outside the cluster, configured by the chart, holding only the chart's RBAC."""
    workload = _serving_workload()
    workload["metadata"]["name"] = name = "llama-8b-daemon"
    workload["spec"]["selector"]["matchLabels"] = workload["spec"]["template"]["metadata"]["labels"] = {"app": name}
    cluster.resource("apps/v1", "Deployment").create(body=workload, namespace=WORKLOAD_NAMESPACE)

    daemon_config = yaml.safe_load(
        cluster.read("v1", "ConfigMap", f"{release.fullname}-config", NAMESPACE)["data"]["config.yaml"]
    )
    daemon_config["prometheus"]["endpoints"] = [{"name": "default", "url": demand.prometheus_url}]
    daemon_config["actuator"]["kubeconfig"] = str(_service_account_kubeconfig(cluster, release, tmp_path / "sa"))
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(daemon_config))
    grpc_port, http_port = free_port(), free_port()
    # No admin credentials reach the daemon: only the kubeconfig in its configuration.
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    env |= {"POD_NAME": "helm-e2e-daemon", "POD_NAMESPACE": NAMESPACE, "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "daemon.log"
    command = [sys.executable, "-m", "autoscaler", "serve", "--config", str(config_file), "--host", "127.0.0.1"]
    command += ["--grpc-port", str(grpc_port), "--http-port", str(http_port), "--log-format", "text"]
    with log.open("wb") as output:
        daemon = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
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
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
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
                return cluster.read("apps/v1", "Deployment", kube.placeholder_name(name), WORKLOAD_NAMESPACE)
            except DynamicApiError:
                return None

        written = _wait_for("the placeholder Deployment", placeholder, 60, daemon, log)
        assert written["spec"]["template"]["spec"]["priorityClassName"] == f"{release.fullname}-placeholder"
        appliers = {entry["manager"] for entry in written["metadata"]["managedFields"] if entry["operation"] == "Apply"}
        assert appliers == {"predictive-autoscaler"}
        assert 0 <= written["spec"]["replicas"] <= 2
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0, log.read_text()[-4000:]
    assert _lease_holder(cluster, lease_name) == "", "the daemon did not release the Lease on SIGTERM"
