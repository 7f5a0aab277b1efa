"""Least privilege: the daemon works as a ServiceAccount bound to exactly deploy/rbac/rules.yaml.

The Role/ClusterRole objects are built from the same file the Helm chart renders, a
token comes from the TokenRequest API, and everything outside the rules is refused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.adapters.kube import ActuatorSettings, KubeActuator, KubeForbiddenError, PlaceholderGroup
from autoscaler.adapters.kube_auth import Identity as CallerIdentity
from autoscaler.adapters.kube_auth import KubeAuthRefusedError, KubeReviewer
from autoscaler.adapters.leader import LeaderElector, LeaseSettings
from autoscaler.services.authn import Authenticator
from autoscaler.services.http_api import create_http_app
from autoscaler.services.telemetry import Telemetry
from tests.harness.cluster import ControlPlane
from tests.unit.services.test_http_api import engine_with_targets, serve, trace_target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RULES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "rules.yaml"


DAEMON_SECTIONS = ("clusterRules", "namespaceRules", "leaseRules")
CALLER_SECTIONS = ("metricsReaderRules", "inspectorRules")


def load_rules() -> dict[str, list[dict[str, Any]]]:
    rules = yaml.safe_load(RULES_FILE.read_text())
    assert set(rules) == {*DAEMON_SECTIONS, *CALLER_SECTIONS}
    return rules  # type: ignore[no-any-return]


def test_caller_rules_only_read_the_daemons_own_paths() -> None:
    rules = load_rules()
    for section in CALLER_SECTIONS:
        for rule in rules[section]:
            assert set(rule) == {"nonResourceURLs", "verbs"} and rule["verbs"] == ["get"], rule
    assert rules["metricsReaderRules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]


def test_rules_file_is_well_formed() -> None:
    for section, rules in load_rules().items():
        if section in CALLER_SECTIONS:
            continue
        assert rules, section
        for rule in rules:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"}, rule
            assert rule["verbs"] and "*" not in rule["verbs"], rule
            assert "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
            assert not {"delete", "deletecollection", "list", "watch", "escalate", "bind", "impersonate"} & set(
                rule["verbs"]
            ), rule


class Identity:
    """A ServiceAccount in its own namespace, bound to the rules file, and its token."""

    def __init__(self, admin: client.ApiClient, control_plane: ControlPlane) -> None:
        self.admin = admin
        self.suffix = uuid.uuid4().hex[:8]
        self.home = f"rbac-daemon-{self.suffix}"  # the daemon's own namespace (its Lease)
        self.targets = f"rbac-targets-{self.suffix}"  # where a served workload lives
        self.elsewhere = f"rbac-other-{self.suffix}"  # a namespace the daemon was given nothing in
        self.name = "predictive-autoscaler"
        self._cluster_objects = f"pa-e2e-{self.suffix}"
        self._control_plane = control_plane

    def create(self) -> client.ApiClient:
        core: Any = client.CoreV1Api(self.admin)
        rbac: Any = client.RbacAuthorizationV1Api(self.admin)
        rules = load_rules()
        for namespace in (self.home, self.targets, self.elsewhere):
            core.create_namespace({"metadata": {"name": namespace}})
        core.create_namespaced_service_account(self.home, {"metadata": {"name": self.name}})
        subject = [{"kind": "ServiceAccount", "name": self.name, "namespace": self.home}]
        rbac.create_cluster_role({"metadata": {"name": self._cluster_objects}, "rules": rules["clusterRules"]})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": self._cluster_objects},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": self._cluster_objects,
                },
                "subjects": subject,
            }
        )
        for namespace, section in ((self.targets, "namespaceRules"), (self.home, "leaseRules")):
            role = f"predictive-autoscaler-{section.lower()}"
            rbac.create_namespaced_role(namespace, {"metadata": {"name": role}, "rules": rules[section]})
            rbac.create_namespaced_role_binding(
                namespace,
                {
                    "metadata": {"name": role},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                    "subjects": subject,
                },
            )
        token = core.create_namespaced_service_account_token(
            self.name, self.home, {"spec": {"expirationSeconds": 3600}}
        ).status.token
        configuration = client.Configuration()
        configuration.host = self._control_plane.server
        configuration.ssl_ca_cert = str(self._control_plane.ca_file)
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(configuration)

    def delete(self) -> None:
        core: Any = client.CoreV1Api(self.admin)
        rbac: Any = client.RbacAuthorizationV1Api(self.admin)
        for namespace in (self.home, self.targets, self.elsewhere):
            core.delete_namespace(namespace)
        rbac.delete_cluster_role_binding(self._cluster_objects)
        rbac.delete_cluster_role(self._cluster_objects)
        try:  # only the test that runs the actuator created one
            client.SchedulingV1Api(self.admin).delete_priority_class(self._cluster_objects)
        except ApiException as exc:
            if exc.status != 404:
                raise


def create_workload(admin: client.ApiClient, namespace: str) -> None:
    labels = {"app": "llm"}
    apps: Any = client.AppsV1Api(admin)
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "llm"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "s", "image": "x", "resources": {"requests": {"cpu": "1"}}}]},
                },
            },
        },
    )


@pytest.fixture
def identity(control_plane: ControlPlane) -> Iterator[tuple[Identity, client.ApiClient]]:
    with control_plane.api_client() as admin:
        who = Identity(admin, control_plane)
        daemon_api = who.create()
        try:
            with daemon_api:
                yield who, daemon_api
        finally:
            who.delete()


def wait_until_authorised(probe: Callable[[], object], timeout_s: float = 10.0) -> None:
    """RBAC objects reach the authoriser's cache shortly after they are created."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe()
            return
        except (ApiException, KubeForbiddenError) as exc:
            if getattr(exc, "status", None) != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_daemon_identity_does_its_job(identity: tuple[Identity, client.ApiClient]) -> None:
    who, daemon_api = identity
    create_workload(who.admin, who.targets)
    # A PriorityClass of its own, so this test proves `create` rather than finding one.
    actuator = KubeActuator(daemon_api, ActuatorSettings(priority_class_name=f"pa-e2e-{who.suffix}"))
    group = PlaceholderGroup(who.targets, "llm")

    wait_until_authorised(lambda: actuator.apply_buffer(group, 2))
    assert actuator.apply_buffer(group, 2).action == "unchanged"
    assert actuator.apply_buffer(group, 3).action == "updated"
    assert actuator.resolved_mode() == "placeholders"  # discovery works for any authenticated identity
    placeholder: Any = client.AppsV1Api(who.admin).read_namespaced_deployment("llm-placeholder", who.targets)
    assert placeholder.spec.replicas == 3

    elector = LeaderElector(
        client.CoordinationV1Api(daemon_api),
        LeaseSettings(
            namespace=who.home,
            identity="daemon-0",
            lease_duration_seconds=3,
            renew_deadline_seconds=2,
            retry_period_seconds=0.5,
        ),
    )
    assert elector.try_acquire_or_renew(), elector.last_error  # create
    assert elector.try_acquire_or_renew(), elector.last_error  # update
    assert elector.release()


POD = client.V1Pod.model_validate({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
Core, Apps, Scheduling = client.CoreV1Api, client.AppsV1Api, client.SchedulingV1Api

# (what, call with the daemon's ApiClient and its target namespace): all outside the rules.
OUTSIDE_THE_RULES: list[tuple[str, Callable[[client.ApiClient, str], object]]] = [
    ("delete pods", lambda api, ns: Core(api).delete_collection_namespaced_pod(ns)),
    ("list secrets", lambda api, ns: Core(api).list_namespaced_secret(ns)),
    ("read a secret", lambda api, ns: Core(api).read_namespaced_secret("any", ns)),
    ("create pods", lambda api, ns: Core(api).create_namespaced_pod(ns, POD)),
    ("delete deployments", lambda api, ns: Apps(api).delete_namespaced_deployment("llm", ns)),
    ("list deployments", lambda api, ns: Apps(api).list_namespaced_deployment(ns)),
    ("list nodes", lambda api, ns: Core(api).list_node()),
    ("delete priority classes", lambda api, ns: Scheduling(api).delete_priority_class("predictive-autoscaler")),
]


@pytest.mark.parametrize(("what", "call"), OUTSIDE_THE_RULES, ids=[what for what, _ in OUTSIDE_THE_RULES])
def test_verbs_outside_the_rules_are_refused(
    identity: tuple[Identity, client.ApiClient], what: str, call: Callable[[client.ApiClient, str], object]
) -> None:
    who, daemon_api = identity
    with pytest.raises(ApiException) as info:
        call(daemon_api, who.targets)
    assert info.value.status == 403, f"{what}: {info.value.status} {info.value.reason}"


def test_namespaces_without_a_binding_are_refused_with_a_precise_error(
    identity: tuple[Identity, client.ApiClient],
) -> None:
    who, daemon_api = identity
    create_workload(who.admin, who.elsewhere)
    with pytest.raises(KubeForbiddenError, match=rf"read workload Deployment {who.elsewhere}/llm: HTTP 403") as info:
        KubeActuator(daemon_api).apply_buffer(PlaceholderGroup(who.elsewhere, "llm"), 1)
    assert isinstance(info.value.__cause__, ApiException)
    lease: Any = client.CoordinationV1Api(daemon_api)
    with pytest.raises(ApiException) as refused:
        lease.create_namespaced_lease(who.targets, {"metadata": {"name": "x"}, "spec": {}})
    assert refused.value.status == 403  # leases only in the daemon's own namespace


# ----------------------------------------------------------------------------- the HTTP port's callers


def _service_account_token(core: Any, namespace: str, name: str) -> str:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    answer = core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 3600}})
    return str(answer.status.token)


def _wait_for_review(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """New bindings reach the authoriser's cache shortly after they are created."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except KubeAuthRefusedError:
            pass
        assert time.monotonic() < deadline, "the review never passed"
        time.sleep(0.2)


async def test_http_port_authenticates_callers_with_the_daemons_rules(
    identity: tuple[Identity, client.ApiClient],
) -> None:
    """Real TokenReview and SubjectAccessReview, made as the daemon's ServiceAccount.

    A scraper bound to metricsReaderRules reads /metrics and nothing else; a
    ServiceAccount without them gets 403; no token or a made-up one gets 401.
    """
    who, daemon_api = identity
    core: Any = client.CoreV1Api(who.admin)
    rbac: Any = client.RbacAuthorizationV1Api(who.admin)
    reader = f"{who.suffix}-metrics-reader"
    scraper_token = _service_account_token(core, who.home, "scraper")
    outsider_token = _service_account_token(core, who.home, "outsider")
    rbac.create_cluster_role({"metadata": {"name": reader}, "rules": load_rules()["metricsReaderRules"]})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": reader},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader},
            "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": who.home}],
        }
    )
    try:
        # An identity without the daemon's clusterRules may not ask the API server to review.
        configuration = client.Configuration()
        configuration.host = daemon_api.configuration.host
        configuration.ssl_ca_cert = daemon_api.configuration.ssl_ca_cert
        configuration.api_key = {"BearerToken": outsider_token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        with client.ApiClient(configuration) as outsider_api, pytest.raises(KubeAuthRefusedError, match="HTTP 403"):
            KubeReviewer(outsider_api).review_token(scraper_token)

        reviewer = KubeReviewer(daemon_api)
        scraper = f"system:serviceaccount:{who.home}:scraper"
        _wait_for_review(lambda: (found := reviewer.review_token(scraper_token)) is not None and found.user == scraper)
        _wait_for_review(
            lambda: reviewer.review_access(
                reviewer.review_token(scraper_token) or CallerIdentity(""), path="/metrics", verb="get"
            )
        )
        engine = engine_with_targets(trace_target())
        app = create_http_app(
            engine, telemetry=Telemetry(engine, process_metrics=False), authenticator=Authenticator(reviewer)
        )
        async with serve(app) as base, aiohttp.ClientSession(base) as session:

            async def status(path: str, token: str | None) -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with session.get(path, headers=headers) as response:
                    return response.status

            assert await status("/metrics", None) == 401
            assert await status("/metrics", "not-a-token") == 401
            assert await status("/metrics", outsider_token) == 403
            assert await status("/metrics", scraper_token) == 200
            assert await status("/api/v1/targets", scraper_token) == 403
            # Kubernetes lets every authenticated user get /api/*: the API is reviewed clear of it.
            assert await status("/api/v1/targets", outsider_token) == 403
            assert await status("/healthz", None) == 200
    finally:
        rbac.delete_cluster_role_binding(reader)
        rbac.delete_cluster_role(reader)
