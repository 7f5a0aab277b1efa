"""The placeholder buffer's objects, built and compared without a cluster.

The quantity parser is the Kubernetes client's own, as the adapter passes it; the
defaults are the actuator's (`ActuatorSettings`), so these are the manifests it applies.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from kubernetes.utils import parse_quantity

from autoscaler.adapters.kube import ActuatorSettings
from autoscaler.domain.placeholders import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SPEC_HASH_ANNOTATION,
    PlaceholderGroup,
    PlaceholderTemplate,
    PodTemplateError,
    bounded_name,
    buffer_object,
    format_quantity,
    matches,
    placeholder_deployment,
    placeholder_name,
    pod_resources,
    priority_class_manifest,
)

TEMPLATE = ActuatorSettings().placeholder_template


def same(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    return matches(current, desired, parse_quantity=parse_quantity)


def container(
    name: str, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": name, "image": "serving:1", "resources": resources}


def workload(pod_spec: dict[str, Any], *, name: str = "llm", namespace: str = "serving") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


GPU = "nvidia.com/gpu"


@pytest.mark.parametrize(
    ("pod_spec", "expected"),
    [
        pytest.param(
            {"containers": [container("a", {"cpu": "2", "memory": "8Gi"}, {GPU: "1", "memory": "8Gi"})]},
            {"requests": {"cpu": "2", "memory": "8589934592", GPU: "1"}, "limits": {"memory": "8589934592", GPU: "1"}},
            id="gpu-limit-implies-request",
        ),
        pytest.param(
            {
                "containers": [
                    container("server", {"cpu": "4", GPU: "2"}, {"cpu": "4", GPU: "2"}),
                    container("proxy", {"cpu": "500m"}, {"cpu": "1"}),
                ]
            },
            {"requests": {"cpu": "4500m", GPU: "2"}, "limits": {"cpu": "5", GPU: "2"}},
            id="summed-over-containers",
        ),
        pytest.param(
            {
                "containers": [
                    container("server", {"cpu": "1", "memory": "1Gi"}, {"cpu": "2"}),
                    container("log", {"cpu": "100m"}),
                ]
            },
            {"requests": {"cpu": "1100m", "memory": "1073741824"}},
            id="one-container-without-limit-leaves-pod-unbounded",
        ),
        pytest.param(
            {
                "initContainers": [container("download", {"cpu": "8", "memory": "1Gi"})],
                "containers": [container("server", {"cpu": "2", "memory": "4Gi", GPU: "1"}, {GPU: "1"})],
            },
            {"requests": {"cpu": "8", "memory": "4294967296", GPU: "1"}, "limits": {GPU: "1"}},
            id="init-container-peak",
        ),
        pytest.param(
            {
                "initContainers": [
                    {**container("mesh", {"cpu": "1"}), "restartPolicy": "Always"},
                    container("warmup", {"cpu": "2"}),
                ],
                "containers": [container("server", {"cpu": "1"})],
            },
            {"requests": {"cpu": "3"}},
            id="sidecar-adds-to-running-and-to-later-init",
        ),
        pytest.param(
            {"containers": [container("a", {"cpu": "0.25"}), container("b", {"cpu": "1m"})]},
            {"requests": {"cpu": "251m"}},
            id="fractional-cpu",
        ),
        pytest.param({"containers": [container("a")]}, {"requests": {}}, id="no-requests"),
    ],
)
def test_pod_resources(pod_spec: dict[str, Any], expected: dict[str, dict[str, str]]) -> None:
    assert pod_resources(pod_spec, parse_quantity=parse_quantity) == expected


@pytest.mark.parametrize(
    ("pod_spec", "message"),
    [
        ({"containers": []}, "no containers"),
        ({}, "no containers"),
        ({"containers": [container("a", {"cpu": "lots"})]}, "container 'a': resource cpu='lots' is not a quantity"),
    ],
)
def test_pod_resources_rejects_unusable_templates(pod_spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PodTemplateError, match=message):
        pod_resources(pod_spec, parse_quantity=parse_quantity)


SCHEDULING = {
    "nodeSelector": {"gpu.product": "H100"},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]
            }
        }
    },
    "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
}


def test_placeholder_copies_scheduling_constraints_and_requests() -> None:
    spec = {
        **SCHEDULING,
        "serviceAccountName": "serving",
        "topologySpreadConstraints": [{"maxSkew": 1}],
        "containers": [container("server", {"cpu": "4", GPU: "1"}, {GPU: "1"})],
    }
    placeholder = placeholder_deployment(workload(spec), replicas=2, template=TEMPLATE)
    pod = placeholder["spec"]["template"]["spec"]
    assert placeholder["metadata"]["name"] == "llm-placeholder"
    assert placeholder["metadata"]["namespace"] == "serving"
    assert placeholder["spec"]["replicas"] == 2
    for key, value in SCHEDULING.items():
        assert pod[key] == value
    assert "serviceAccountName" not in pod
    assert "topologySpreadConstraints" not in pod
    assert pod["priorityClassName"] == TEMPLATE.priority_class_name
    assert pod["terminationGracePeriodSeconds"] == 0
    assert pod["automountServiceAccountToken"] is False
    [pause] = pod["containers"]
    assert pause["image"] == "registry.k8s.io/pause:3.10"
    assert pause["resources"] == {"requests": {"cpu": "4", GPU: "1"}, "limits": {GPU: "1"}}


def test_placeholder_labels_select_only_its_own_pods() -> None:
    placeholder = placeholder_deployment(workload({"containers": [container("a")]}), replicas=1, template=TEMPLATE)
    selector = placeholder["spec"]["selector"]["matchLabels"]
    pod_labels = placeholder["spec"]["template"]["metadata"]["labels"]
    assert placeholder["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert selector.items() <= pod_labels.items()
    assert "app" not in pod_labels  # never counted as a serving pod by the workload's Service or selector
    assert placeholder["spec"]["strategy"] == {"type": "Recreate"}


def test_placeholder_does_not_alias_the_workload() -> None:
    source = workload({**SCHEDULING, "containers": [container("a", {"cpu": "1"})]})
    pristine = copy.deepcopy(source)
    placeholder_deployment(source, replicas=1, template=TEMPLATE)
    assert source == pristine


def test_the_template_reaches_the_manifests() -> None:
    template = PlaceholderTemplate(
        priority_class_name="buffer", priority_value=-5, image="example/pause:1", parse_quantity=parse_quantity
    )
    placeholder = placeholder_deployment(workload({"containers": [container("a")]}), replicas=0, template=template)
    pod = placeholder["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "buffer"
    assert pod["containers"][0]["image"] == "example/pause:1"
    assert priority_class_manifest(template) == {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "buffer", "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        "value": -5,
        "preemptionPolicy": "Never",
        "globalDefault": False,
        "description": priority_class_manifest(template)["description"],
    }


def test_spec_hash_ignores_replicas_and_tracks_the_template() -> None:
    base = workload({"containers": [container("a", {GPU: "1"})]})
    one = placeholder_deployment(base, replicas=1, template=TEMPLATE)
    five = placeholder_deployment(base, replicas=5, template=TEMPLATE)
    bigger = placeholder_deployment(
        workload({"containers": [container("a", {GPU: "2"})]}), replicas=1, template=TEMPLATE
    )
    assert hash_of(one) == hash_of(five)
    assert hash_of(one) != hash_of(bigger)


def hash_of(manifest: dict[str, Any]) -> str:
    return str(manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION])


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: None, True),
        (lambda d: d["spec"].__setitem__("replicas", 7), False),
        (lambda d: d["metadata"]["annotations"].__setitem__(SPEC_HASH_ANNOTATION, "stale"), False),
        (lambda d: d["metadata"].__setitem__("annotations", {}), False),
        (lambda d: d["spec"]["template"]["spec"].__setitem__("dnsPolicy", "ClusterFirst"), True),  # server defaults
    ],
)
def test_matches(mutate: Any, expected: bool) -> None:
    desired = placeholder_deployment(workload({"containers": [container("a")]}), replicas=2, template=TEMPLATE)
    current = copy.deepcopy(desired)
    mutate(current)
    assert same(current, desired) is expected


def served(desired: dict[str, Any]) -> dict[str, Any]:
    """`desired` as the API server returns it: defaults filled in, quantities canonical, empties dropped."""
    current = copy.deepcopy(desired)
    current["metadata"].update(uid="0d8c", resourceVersion="41", generation=1, managedFields=[{"manager": "x"}])
    current["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    spec = current["spec"]
    spec.update(progressDeadlineSeconds=600)
    spec["template"]["metadata"]["creationTimestamp"] = None
    pod = spec["template"]["spec"]
    pod.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler")
    pod["tolerations"][0]["tolerationSeconds"] = None
    for item in pod["containers"]:
        item.update(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File")
        item.update(imagePullPolicy="IfNotPresent")
        for amounts in item["resources"].values():
            amounts["memory"] = "1G"  # sent as "1000000000"
    current["status"] = {"replicas": 2, "unavailableReplicas": 2}
    return current


def desired_with_defaults_to_fill() -> dict[str, Any]:
    pod_spec = {
        **SCHEDULING,
        "containers": [
            container("a", {"cpu": "1", "memory": "500M"}, {"cpu": "1500m", "memory": "500M"}),
            container("b", {"memory": "500M"}, {"memory": "500M"}),
        ],
    }
    desired = placeholder_deployment(workload(pod_spec), replicas=2, template=TEMPLATE)
    assert desired["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "1000000000"},
        "limits": {"memory": "1000000000"},
    }
    return desired


def test_matches_a_deployment_the_server_defaulted() -> None:
    desired = desired_with_defaults_to_fill()
    assert same(served(desired), desired)


def test_matches_an_empty_requests_map_the_server_dropped() -> None:
    desired = placeholder_deployment(workload({"containers": [container("a")]}), replicas=2, template=TEMPLATE)
    assert desired["spec"]["template"]["spec"]["containers"][0]["resources"] == {"requests": {}}
    current = copy.deepcopy(desired)
    del current["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert same(current, desired)


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(lambda d: pod_of(d)["containers"][0].update(image="registry.invalid/x:1"), False, id="image"),
        pytest.param(lambda d: pod_of(d)["containers"][0]["resources"]["limits"].clear(), False, id="limit-gone"),
        pytest.param(
            lambda d: pod_of(d)["containers"][0]["resources"]["requests"].update(memory="2G"), False, id="request"
        ),
        pytest.param(lambda d: pod_of(d)["containers"][0].pop("securityContext"), False, id="security-context"),
        pytest.param(lambda d: pod_of(d).update(automountServiceAccountToken=True), False, id="token-mounted"),
        pytest.param(lambda d: pod_of(d).update(priorityClassName="high"), False, id="priority-class"),
        pytest.param(lambda d: pod_of(d)["nodeSelector"].update({"gpu.product": "A100"}), False, id="node-selector"),
        pytest.param(lambda d: pod_of(d)["tolerations"].append({"operator": "Exists"}), False, id="toleration-added"),
        pytest.param(lambda d: pod_of(d).pop("affinity"), False, id="affinity-gone"),
        pytest.param(lambda d: d["spec"].update(strategy={"type": "RollingUpdate"}), False, id="strategy"),
        pytest.param(lambda d: d["spec"].update(replicas=7), False, id="replicas"),
        pytest.param(lambda d: d["metadata"]["labels"].pop("app.kubernetes.io/instance"), False, id="label"),
        # Our forced apply cannot remove fields another manager added, so they must not
        # count as a difference (a write every pass would follow).
        pytest.param(lambda d: pod_of(d)["containers"].append({"name": "extra", "image": "x"}), True, id="other-item"),
        pytest.param(lambda d: pod_of(d)["nodeSelector"].update(extra="1"), True, id="other-key"),
    ],
)
def test_matches_sees_edits_that_keep_the_hash(edit: Any, expected: bool) -> None:
    desired = desired_with_defaults_to_fill()
    current = served(desired)
    edit(current)
    assert current["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == hash_of(desired)
    assert same(current, desired) is expected


@pytest.mark.parametrize(
    ("base", "suffix", "limit"),
    [("llm", "-placeholder", 63), ("a" * 60, "-placeholder", 63), ("x.y-" * 30 + "z", "-placeholder", 63)],
)
def test_bounded_name(base: str, suffix: str, limit: int) -> None:
    name = bounded_name(base, suffix, limit)
    assert len(name) <= limit
    assert name.endswith(suffix)
    assert name[0].isalnum()
    if len(base) + len(suffix) <= limit:
        assert name == base + suffix
    else:
        assert bounded_name(base + "2", suffix, limit) != name


def test_placeholder_name_is_a_label_value() -> None:
    assert placeholder_name("llm") == "llm-placeholder"
    assert len(placeholder_name("w" * 253)) == 63


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("2"), "2"), (Decimal("0.5"), "500m"), (Decimal("1610612736.0"), "1610612736"), (Decimal("0.0001"), "1m")],
)
def test_format_quantity(value: Decimal, text: str) -> None:
    assert format_quantity(value) == text


@pytest.mark.parametrize("version", ["v1beta1", "v1alpha1"])
def test_capacity_buffer_manifest(version: str) -> None:
    group = PlaceholderGroup("serving", "llm")
    buffer = buffer_object(group, replicas=3, version=version)
    assert buffer["apiVersion"] == f"autoscaling.x-k8s.io/{version}"
    assert buffer["kind"] == "CapacityBuffer"
    assert buffer["metadata"]["name"] == "llm-placeholder"
    assert buffer["metadata"]["namespace"] == "serving"
    assert buffer["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert buffer["spec"] == {
        "scalableRef": {"apiGroup": "apps", "kind": "Deployment", "name": "llm"},
        "replicas": 3,
        "provisioningStrategy": "buffer.x-k8s.io/active-capacity",
    }
    same_shape = buffer_object(group, replicas=0, version=version)
    assert same(buffer, buffer)
    assert not same(same_shape, buffer)
    assert same_shape["metadata"]["annotations"] == buffer["metadata"]["annotations"]
