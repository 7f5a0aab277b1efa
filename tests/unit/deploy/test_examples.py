"""The examples in deploy/examples/ are valid as written.

Every external trigger's metadata parses with the daemon's own `parse_spec` (after
dropping the keys that configure KEDA's client, as the gRPC service does), points at
the chart's Service, and refers to objects the same file defines. Every example values
file, merged over the chart defaults as helm merges it, satisfies values.schema.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from autoscaler.domain.spec import parse_spec
from autoscaler.services.grpc_scaler import KEDA_CONNECTION_KEYS
from tests.unit.deploy.deploy_files import (
    RELEASE_NAME,
    SCALER_ADDRESS,
    ExampleTrigger,
    default_values,
    example_external_triggers,
    example_manifest_files,
    example_values_files,
    load_documents,
    merge_values,
    values_schema,
)

TRIGGERS = list(example_external_triggers())


def _objects(path: Path, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in load_documents(path) if doc.get("kind") == kind}


def _spec_metadata(example: ExampleTrigger) -> dict[str, str]:
    """What parse_spec sees: KEDA forwards its own client keys in scalerMetadata too."""
    return {key: value for key, value in example.trigger["metadata"].items() if key not in KEDA_CONNECTION_KEYS}


def _validator() -> jsonschema.Draft7Validator:
    schema = values_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_every_example_file_has_a_scaled_object_on_our_scaler() -> None:
    files_with_triggers = {trigger.file for trigger in TRIGGERS}
    assert files_with_triggers == set(example_manifest_files())
    assert {path.name for path in files_with_triggers} >= {
        "vllm-queue-and-kv-cache.yaml",
        "request-rate.yaml",
        "shadow-mode.yaml",
    }


@pytest.mark.parametrize("example", TRIGGERS, ids=lambda t: t.label)
def test_trigger_metadata_parses(example: ExampleTrigger) -> None:
    metadata = example.trigger["metadata"]
    assert all(isinstance(value, str) for value in metadata.values()), "ScaledObject metadata values are strings"
    assert metadata["scalerAddress"] == SCALER_ADDRESS
    parse_spec(_spec_metadata(example))


@pytest.mark.parametrize("example", TRIGGERS, ids=lambda t: t.label)
def test_trigger_refers_to_objects_in_its_file(example: ExampleTrigger) -> None:
    deployments = _objects(example.file, "Deployment")
    scaled_object = _objects(example.file, "ScaledObject")[example.scaled_object]
    assert scaled_object["spec"]["scaleTargetRef"]["name"] in deployments
    workload = example.trigger["metadata"].get("workloadName")
    if workload is not None:
        assert workload in deployments, f"workloadName {workload!r} is not a Deployment in {example.file.name}"


@pytest.mark.parametrize("example", TRIGGERS, ids=lambda t: t.label)
def test_triggers_use_the_charts_cluster_trigger_authentication(example: ExampleTrigger) -> None:
    """The chart's default is mutual TLS: KEDA presents the client pair the chart's
    ClusterTriggerAuthentication (named after the release) carries.
    """
    assert example.trigger["metadata"].get("enableTLS") == "true"
    assert example.trigger["authenticationRef"] == {"kind": "ClusterTriggerAuthentication", "name": RELEASE_NAME}
    assert "TriggerAuthentication" not in {doc["kind"] for doc in load_documents(example.file)}


def test_vllm_example_scales_a_gpu_workload_on_queue_depth_and_kv_cache() -> None:
    triggers = [t for t in TRIGGERS if t.file.name == "vllm-queue-and-kv-cache.yaml"]
    specs = [parse_spec(_spec_metadata(trigger)) for trigger in triggers]
    assert sorted(spec.preset or "" for spec in specs) == ["vllm-kv-cache", "vllm-waiting"]
    deployment = next(iter(_objects(triggers[0].file, "Deployment").values()))
    requests = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["nvidia.com/gpu"] == 1


def test_shadow_example_is_in_shadow_mode() -> None:
    triggers = [t for t in TRIGGERS if t.file.name == "shadow-mode.yaml"]
    assert triggers
    for trigger in triggers:
        assert parse_spec(_spec_metadata(trigger)).shadow


def test_default_values_satisfy_the_schema() -> None:
    _validator().validate(default_values())


@pytest.mark.parametrize("path", example_values_files(), ids=lambda p: p.name)
def test_example_values_satisfy_the_schema(path: Path) -> None:
    override = load_documents(path)[0]
    _validator().validate(merge_values(default_values(), override))


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("negative replicas", {"replicaCount": -1}, "-1 is less than the minimum of 1"),
    ("unknown top-level key", {"replicas": 2}, "'replicas' was unexpected"),
    ("unknown nested key", {"tls": {"secret": "x"}}, "'secret' was unexpected"),
    ("tls mode not named", {"tls": {"mode": "off"}}, "'off' is not one of ['mutual-tls', 'tls', 'insecure-plaintext']"),
    ("unknown certificate source", {"tls": {"source": "vault"}}, "'vault' is not one of"),
    (
        "monitoring namespace not a list",
        {"networkPolicy": {"monitoring": {"namespaces": "monitoring"}}},
        "is not of type 'array'",
    ),
    (
        "http auth mode not named",
        {"config": {"http": {"auth": {"mode": "off"}}}},
        "'off' is not one of ['kubernetes', 'none']",
    ),
    ("bad actuator mode", {"config": {"actuator": {"mode": "sometimes"}}}, "'sometimes' is not one of"),
    ("bad log level", {"config": {"log": {"level": "verbose"}}}, "'verbose' is not one of"),
    ("lease too short", {"config": {"leaderElection": {"leaseDurationSeconds": 1}}}, "less than the minimum of 2"),
    ("placeholder priority not below zero", {"placeholders": {"priorityClass": {"value": 0}}}, "maximum of -1"),
    ("bad image digest", {"image": {"digest": "sha256:abc"}}, "does not match"),
    ("bad pdb percentage", {"podDisruptionBudget": {"minAvailable": "half"}}, "is not valid under any"),
    (
        "prometheus url without scheme",
        {"config": {"prometheus": {"endpoints": [{"name": "default", "url": "prometheus:9090"}]}}},
        "does not match",
    ),
    (
        "token from both a file and a secret",
        {
            "config": {
                "prometheus": {
                    "endpoints": [
                        {
                            "name": "default",
                            "url": "https://p:9091",
                            "bearerTokenFile": "/var/run/token",
                            "bearerTokenSecret": {"name": "p", "key": "token"},
                        }
                    ]
                }
            }
        },
        "was expected",
    ),
]


@pytest.mark.parametrize(("case", "override", "message"), BAD_VALUES, ids=[case for case, _, _ in BAD_VALUES])
def test_schema_rejects_bad_values(case: str, override: dict[str, Any], message: str) -> None:
    errors = [error.message for error in _validator().iter_errors(merge_values(default_values(), override))]
    assert errors, f"{case}: accepted"
    assert any(message in error for error in errors), errors
