"""The placeholder buffer as data: the objects the actuator applies, and whether what
the API server holds already is what we would apply.

Placeholders are pause pods that request what one serving pod requests, at a priority
below every real pod and with `preemptionPolicy: Never` (docs/prewarming.md). A
CapacityBuffer (autoscaling.x-k8s.io) asks the cluster autoscaler for the same room
without pods. The I/O around these objects (reads, server-side apply, retries, the
write guard) is `autoscaler.adapters.kube`.

Pure: no I/O, no clock, no Kubernetes client. Resource quantities are parsed with the
caller's `parse_quantity` (the adapter passes the Kubernetes client's own parser), so
the core imports no client library.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

QuantityParser = Callable[[object], Decimal]
"""Kubernetes quantity text ("500m", "8Gi") -> Decimal; raises ValueError on bad text."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "predictive-autoscaler"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
SPEC_HASH_ANNOTATION = "predictive-autoscaler.io/spec-hash"
WORKLOAD_ANNOTATION = "predictive-autoscaler.io/workload"
PAUSE_UID = 65535  # the pause image's own non-root user
# Resources a container may use beyond its request; for every other resource (GPUs,
# hugepages, extended resources) the API requires limits equal to requests.
OVERCOMMITTABLE = frozenset({"cpu", "memory", "ephemeral-storage"})
MAX_NAME = 63

CAPACITY_BUFFER_GROUP = "autoscaling.x-k8s.io"
CAPACITY_BUFFER_KIND = "CapacityBuffer"
ACTIVE_CAPACITY_STRATEGY = "buffer.x-k8s.io/active-capacity"


class PodTemplateError(ValueError):
    """The serving workload's pod template cannot be copied (no containers, a bad quantity)."""


@dataclass(frozen=True, slots=True)
class PlaceholderTemplate:
    """What placeholder pods are made of besides the serving pod's shape."""

    priority_class_name: str
    priority_value: int
    image: str
    parse_quantity: QuantityParser


@dataclass(frozen=True, slots=True)
class PlaceholderGroup:
    """The serving workload a buffer belongs to; targets on one workload share it."""

    namespace: str
    workload_name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.workload_name}"


def bounded_name(base: str, suffix: str, limit: int = MAX_NAME) -> str:
    """`base + suffix`, shortened with a digest of `base` when longer than `limit`."""
    name = f"{base}{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"


def placeholder_name(workload_name: str) -> str:
    return bounded_name(workload_name, "-placeholder")


def managed_labels(name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: name, COMPONENT_LABEL: "placeholder"}


def spec_hash(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def format_quantity(value: Decimal) -> str:
    """A Kubernetes quantity string; fractions round up to the milli-unit."""
    if value == value.to_integral_value():
        return str(int(value))
    milli = (value * 1000).to_integral_value(rounding=ROUND_CEILING)
    return f"{int(milli)}m"


def _quantities(amounts: Mapping[str, Any] | None, where: str, parse: QuantityParser) -> dict[str, Decimal]:
    parsed: dict[str, Decimal] = {}
    for name, text in (amounts or {}).items():
        try:
            parsed[name] = parse(text)
        except ValueError as exc:
            raise PodTemplateError(f"{where}: resource {name}={text!r} is not a quantity") from exc
    return parsed


@dataclass(frozen=True, slots=True)
class _ContainerResources:
    requests: dict[str, Decimal]
    limits: dict[str, Decimal]


def _container_resources(container: Mapping[str, Any], parse: QuantityParser) -> _ContainerResources:
    where = f"container {container.get('name', '?')!r}"
    resources = container.get("resources") or {}
    limits = _quantities(resources.get("limits"), where, parse)
    # The API server defaults a missing request to the limit.
    requests = {**limits, **_quantities(resources.get("requests"), where, parse)}
    return _ContainerResources(requests=requests, limits=limits)


def _pod_total(
    app: list[dict[str, Decimal]], sidecars: list[dict[str, Decimal]], init_steps: list[dict[str, Decimal]]
) -> dict[str, Decimal]:
    """The pod's effective amount per resource, as the scheduler counts it.

    Running containers and restartable init containers (sidecars) add up; each
    ordinary init container runs alone next to the sidecars started before it, and
    the pod needs the larger of the two phases.
    """
    names = {name for amounts in (*app, *sidecars, *init_steps) for name in amounts}
    running = {name: sum((a.get(name, Decimal(0)) for a in (*app, *sidecars)), Decimal(0)) for name in names}
    total = dict(running)
    for name in names:
        for step in init_steps:
            total[name] = max(total[name], step.get(name, Decimal(0)))
    return {name: amount for name, amount in total.items() if amount > 0}


def pod_resources(pod_spec: Mapping[str, Any], *, parse_quantity: QuantityParser) -> dict[str, dict[str, str]]:
    """The requests and limits one pause container needs to take a serving pod's room."""
    containers = [_container_resources(c, parse_quantity) for c in pod_spec.get("containers") or []]
    if not containers:
        raise PodTemplateError("pod template has no containers")
    sidecars: list[_ContainerResources] = []
    init_steps: list[dict[str, Decimal]] = []
    for raw in pod_spec.get("initContainers") or []:
        resources = _container_resources(raw, parse_quantity)
        if raw.get("restartPolicy") == "Always":
            sidecars.append(resources)
            continue
        before = _pod_total([], [s.requests for s in sidecars], [])
        init_steps.append(
            {
                n: resources.requests.get(n, Decimal(0)) + before.get(n, Decimal(0))
                for n in {*resources.requests, *before}
            }
        )
    long_running = [*containers, *sidecars]
    requests = _pod_total([c.requests for c in containers], [s.requests for s in sidecars], init_steps)
    limits: dict[str, Decimal] = {}
    for name, amount in requests.items():
        if name not in OVERCOMMITTABLE:
            limits[name] = amount
        elif all(name in c.limits for c in long_running):
            # A single container without a limit leaves the whole pod unbounded.
            limits[name] = max(amount, sum((c.limits[name] for c in long_running), Decimal(0)))
    result = {"requests": {n: format_quantity(v) for n, v in sorted(requests.items())}}
    if limits:
        result["limits"] = {n: format_quantity(v) for n, v in sorted(limits.items())}
    return result


def priority_class_manifest(template: PlaceholderTemplate) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": template.priority_class_name, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        "value": template.priority_value,
        "preemptionPolicy": "Never",
        "globalDefault": False,
        "description": "Placeholder pods of the predictive autoscaler: any real pod preempts them.",
    }


def placeholder_deployment(
    workload: Mapping[str, Any], *, replicas: int, template: PlaceholderTemplate
) -> dict[str, Any]:
    """The whole placeholder Deployment for `workload` (a Deployment as an API dict)."""
    metadata = workload.get("metadata") or {}
    workload_name = str(metadata.get("name", ""))
    pod_spec = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    try:
        resources = pod_resources(pod_spec, parse_quantity=template.parse_quantity)
    except PodTemplateError as exc:
        raise PodTemplateError(f"Deployment {metadata.get('namespace')}/{workload_name}: {exc}") from exc
    name = placeholder_name(workload_name)
    labels = managed_labels(name)
    copied = {key: pod_spec[key] for key in ("nodeSelector", "affinity", "tolerations") if pod_spec.get(key)}
    template_spec: dict[str, Any] = {
        **copied,
        "priorityClassName": template.priority_class_name,
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": PAUSE_UID,
            "runAsGroup": PAUSE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "pause",
                "image": template.image,
                "resources": resources,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: name}},
        # Recreate, not RollingUpdate: a surge placeholder would go Pending and make
        # the cluster autoscaler add a node nobody asked for.
        "strategy": {"type": "Recreate"},
        "revisionHistoryLimit": 1,
        "template": {"metadata": {"labels": labels}, "spec": template_spec},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": metadata.get("namespace"),
            "labels": labels,
            "annotations": {
                WORKLOAD_ANNOTATION: workload_name,
                SPEC_HASH_ANNOTATION: spec_hash({"labels": labels, "spec": spec}),
            },
        },
        "spec": {"replicas": replicas, **spec},
    }


def buffer_object(group: PlaceholderGroup, *, replicas: int, version: str) -> dict[str, Any]:
    """The whole CapacityBuffer for `group`, with the same labels and hash as placeholders."""
    name = placeholder_name(group.workload_name)
    labels = managed_labels(name)
    fixed = capacity_buffer_manifest(
        name=name, namespace=group.namespace, workload_name=group.workload_name,
        replicas=0, version=version, labels=labels, annotations={},
    )  # fmt: skip
    annotations = {
        WORKLOAD_ANNOTATION: group.workload_name,
        SPEC_HASH_ANNOTATION: spec_hash({"apiVersion": fixed["apiVersion"], "labels": labels, "spec": fixed["spec"]}),
    }
    return capacity_buffer_manifest(
        name=name, namespace=group.namespace, workload_name=group.workload_name,
        replicas=replicas, version=version, labels=labels, annotations=annotations,
    )  # fmt: skip


# Maps whose values are quantities: the API server rewrites them in canonical form
# ("1000000000" comes back as "1G", "2048Mi" as "2Gi").
_QUANTITY_MAPS = frozenset({"requests", "limits"})


def _same_quantity(current: object, desired: object, parse: QuantityParser) -> bool:
    try:
        return parse(current) == parse(desired)
    except (ValueError, TypeError):
        return current == desired


def _covers(current: Any, desired: Any, *, parse: QuantityParser, amounts: bool = False) -> bool:
    """True when `current` already holds every value `desired` sets.

    This is what a forced server-side apply of `desired` would leave unchanged: fields
    the API server adds (defaults such as dnsPolicy or terminationMessagePath) and
    fields other managers own are extra and ignored; empty values count as absent
    because the server drops them; lists of named items (containers, env, volumes)
    merge by name, other lists are replaced whole, so they must match item by item.
    `amounts` marks `desired` as a requests or limits map, compared by quantity.
    """
    if desired is None or (isinstance(desired, Mapping | list | str) and not desired):
        return True
    if isinstance(desired, Mapping):
        if current is None:
            current = {}
        if not isinstance(current, Mapping):
            return False
        if amounts:
            return all(_same_quantity(current.get(key), value, parse) for key, value in desired.items())
        return all(
            _covers(current.get(key), value, parse=parse, amounts=key in _QUANTITY_MAPS)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(current, list):
            return False
        if all(isinstance(item, Mapping) and "name" in item for item in desired):
            found = {item.get("name"): item for item in current if isinstance(item, Mapping)}
            return all(_covers(found.get(item["name"]), item, parse=parse) for item in desired)
        return len(current) == len(desired) and all(
            _covers(c, d, parse=parse) for c, d in zip(current, desired, strict=True)
        )
    # bool is an int in Python, but `true` is no `1` to the API server.
    return isinstance(current, bool) is isinstance(desired, bool) and bool(current == desired)


def matches(current: Mapping[str, Any], desired: Mapping[str, Any], *, parse_quantity: QuantityParser) -> bool:
    """True when `current` already is what `desired` asks: same owned spec and replicas.

    For a placeholder Deployment every field of the desired spec (pod template,
    selector, strategy) and metadata is compared by value, so an edit that keeps the
    spec-hash annotation and replicas is still seen; for other kinds the spec-hash
    annotation stands for the spec.
    """
    current_annotations = (current.get("metadata") or {}).get("annotations") or {}
    if not (
        current_annotations.get(SPEC_HASH_ANNOTATION) == desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        and (current.get("spec") or {}).get("replicas") == desired["spec"]["replicas"]
        and current.get("apiVersion", desired["apiVersion"]) == desired["apiVersion"]
    ):
        return False
    if desired.get("kind") != "Deployment":
        return True
    current_metadata = current.get("metadata") or {}
    return all(
        _covers(current_metadata.get(key), desired["metadata"].get(key), parse=parse_quantity)
        for key in ("labels", "annotations")
    ) and _covers(current.get("spec"), desired["spec"], parse=parse_quantity)


def capacity_buffer_manifest(
    *,
    name: str,
    namespace: str,
    workload_name: str,
    replicas: int,
    version: str,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> dict[str, Any]:
    """The whole CapacityBuffer object we own: `replicas` chunks shaped like the workload's pods."""
    return {
        "apiVersion": f"{CAPACITY_BUFFER_GROUP}/{version}",
        "kind": CAPACITY_BUFFER_KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "scalableRef": {"apiGroup": "apps", "kind": "Deployment", "name": workload_name},
            "replicas": replicas,
            "provisioningStrategy": ACTIVE_CAPACITY_STRATEGY,
        },
    }
