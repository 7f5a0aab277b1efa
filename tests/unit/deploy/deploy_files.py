"""Where the deployment artefacts live, and how to read them the way their tools do."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "predictive-autoscaler"
EXAMPLES_DIR = REPO_ROOT / "deploy" / "examples"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

# Helm cannot read files outside the chart, so the chart carries copies of these
# sources; tests/unit/deploy/test_chart_files.py keeps each copy byte-identical.
CHART_FILE_SOURCES = {
    CHART_DIR / "files" / "rbac-rules.yaml": REPO_ROOT / "deploy" / "rbac" / "rules.yaml",
    CHART_DIR / "files" / "predictive-autoscaler-dashboard.json": REPO_ROOT
    / "deploy"
    / "grafana"
    / "predictive-autoscaler-dashboard.json",
}

# What the examples assume about the install: `helm install predictive-autoscaler ...
# -n predictive-autoscaler`.
RELEASE_NAME = "predictive-autoscaler"
RELEASE_NAMESPACE = "predictive-autoscaler"
SCALER_ADDRESS = f"{RELEASE_NAME}.{RELEASE_NAMESPACE}.svc:9100"


def example_manifest_files() -> list[Path]:
    return sorted(path for path in EXAMPLES_DIR.glob("*.yaml") if not path.name.startswith("values-"))


def example_values_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("values-*.yaml"))


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
    return schema


def default_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return values


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a user values file over the chart defaults.

    Maps merge key by key, any other value (lists included) replaces the default, and
    null deletes the key, so the schema sees exactly what helm validates.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True, slots=True)
class ExampleTrigger:
    file: Path
    scaled_object: str
    index: int
    trigger: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.file.name}:{self.scaled_object}[{self.index}]"


def example_external_triggers() -> Iterator[ExampleTrigger]:
    for path in example_manifest_files():
        for doc in load_documents(path):
            if doc.get("kind") != "ScaledObject":
                continue
            for index, trigger in enumerate(doc["spec"]["triggers"]):
                if trigger.get("type") == "external":
                    yield ExampleTrigger(path, doc["metadata"]["name"], index, trigger)
