"""`autoscaler config`, and the documents that must agree with the settings' schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from autoscaler.cli import main
from autoscaler.commands.config import reference_table
from autoscaler.settings import load_settings, settings_schema

REPOSITORY = Path(__file__).resolve().parents[2]
CHART_SCHEMA = REPOSITORY / "deploy" / "helm" / "predictive-autoscaler" / "values.schema.json"
CONFIGURATION_MD = REPOSITORY / "docs" / "configuration.md"
# Chart values the chart itself turns into daemon settings: a mounted Secret becomes a file path.
CHART_ONLY = {"prometheus.endpoints[].bearerTokenSecret", "prometheus.endpoints[].caSecret"}


def test_validate_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("grpc: {port: 9200}\nlimits: {tenancy: namespace}\n")
    assert main(["config", "validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("grpc: {port: 9100.7}", "grpc.port"),
        ("engine: {fitWorkers: true}", "engine.fitWorkers"),
        ("engine: {fitWorkers: 0}", "engine.fitWorkers"),
        ("engine: {tickSeconds: 0}", "engine.tickSeconds"),
        ("engine: {maxTargets: -5}", "engine.maxTargets"),
        ("grpc: {warmingWaitSeconds: -1}", "grpc.warmingWaitSeconds"),
        ("log: debug", "log"),
    ],
)
def test_validate_rejects_a_bad_file_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, path: str
) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(text)
    assert main(["config", "validate", str(file)]) == 1
    assert capsys.readouterr().err.startswith(f"{file}: invalid: {path}: ")


def test_validate_ignores_the_shells_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PA_GRPC_PORT", "not-a-port")
    file = tmp_path / "config.yaml"
    file.write_text("{}")
    assert main(["config", "validate", str(file)]) == 0


def test_schema_is_the_settings_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == settings_schema()
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed["additionalProperties"] is False
    assert set(printed["properties"]) == {
        "prometheus",
        "grpc",
        "http",
        "leaderElection",
        "actuator",
        "engine",
        "limits",
        "log",
        "clock",
    }


def test_documented_example_is_valid_for_the_daemon_and_the_schema(tmp_path: Path) -> None:
    example = _yaml_block(CONFIGURATION_MD.read_text(), after="## Daemon configuration")
    jsonschema.validate(yaml.safe_load(example), settings_schema())
    path = tmp_path / "example.yaml"
    path.write_text(example)
    assert load_settings(str(path), environ={}).limits.tenancy == "namespace"


def test_configuration_md_carries_the_generated_reference() -> None:
    assert reference_table(settings_schema()) in CONFIGURATION_MD.read_text()


def test_chart_config_schema_agrees_with_the_settings() -> None:
    """Every setting the chart's values.schema.json exposes under `config` exists in the
    daemon's schema with the same type and choices, and bounds no looser than the daemon's."""
    chart = json.loads(CHART_SCHEMA.read_text())
    daemon = settings_schema()
    compared = 0
    for path, chart_field in _leaves(chart["properties"]["config"], chart.get("definitions", {}), prefix=""):
        if any(path == key or path.startswith(f"{key}.") for key in CHART_ONLY):
            continue
        daemon_field = _at(daemon, path)
        assert daemon_field is not None, f"values.schema.json config.{path}: no such daemon setting"
        _assert_agrees(path, chart_field, daemon_field)
        compared += 1
    assert compared >= 15


def _yaml_block(markdown: str, *, after: str) -> str:
    match = re.search(r"```yaml\n(.*?)```", markdown[markdown.index(after) :], re.DOTALL)
    assert match is not None
    return match.group(1)


def _resolve(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = {**definitions[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _leaves(node: Mapping[str, Any], definitions: Mapping[str, Any], *, prefix: str) -> Iterator[tuple[str, Any]]:
    for name, field in node.get("properties", {}).items():
        resolved = _resolve(field, definitions)
        path = f"{prefix}{name}"
        if "properties" in resolved:
            yield from _leaves(resolved, definitions, prefix=f"{path}.")
        elif resolved.get("type") == "array" and "properties" in _resolve(resolved["items"], definitions):
            yield from _leaves(_resolve(resolved["items"], definitions), definitions, prefix=f"{path}[].")
        else:
            yield path, resolved


def _at(schema: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    definitions = schema.get("$defs", {})
    node: Mapping[str, Any] = schema
    for part in path.split("."):
        node = _resolve(node, definitions)
        field = node.get("properties", {}).get(part.removesuffix("[]"))
        if field is None:
            return None
        node = _resolve(field, definitions)["items"] if part.endswith("[]") else field
    return _resolve(node, definitions)


def _types(field: Mapping[str, Any]) -> set[str]:
    types = {str(option["type"]) for option in field.get("anyOf", [field]) if "type" in option}
    return types | ({"string"} if "enum" in field else set())


def _bound(field: Mapping[str, Any], inclusive: str, exclusive: str) -> tuple[float, bool] | None:
    """(value, exclusive) of a lower or upper bound; None when unbounded."""
    if exclusive in field:
        return float(field[exclusive]), True
    if inclusive in field:
        return float(field[inclusive]), False
    return None


def _assert_agrees(path: str, chart: Mapping[str, Any], daemon: Mapping[str, Any]) -> None:
    if "enum" in chart or "enum" in daemon:
        assert set(chart.get("enum", ())) == set(daemon.get("enum", ())), f"{path}: choices differ"
    chart_types, daemon_types = _types(chart), _types(daemon)
    widened = daemon_types | ({"integer"} if "number" in daemon_types else set())
    assert chart_types <= widened, f"{path}: the chart takes {chart_types}, the daemon {daemon_types}"
    for inclusive, exclusive, sign in (("minimum", "exclusiveMinimum", 1), ("maximum", "exclusiveMaximum", -1)):
        daemon_bound = _bound(daemon, inclusive, exclusive)
        if daemon_bound is None:
            continue
        chart_bound = _bound(chart, inclusive, exclusive)
        assert chart_bound is not None, f"{path}: the daemon is bounded ({daemon_bound}), the chart is not"
        inside = sign * (chart_bound[0] - daemon_bound[0]) > 0 or (
            chart_bound[0] == daemon_bound[0] and (chart_bound[1] or not daemon_bound[1])
        )
        assert inside, f"{path}: the chart's bound {chart_bound} is looser than the daemon's {daemon_bound}"


@pytest.mark.parametrize(
    ("path", "chart_field"),
    [
        ("actuator.mode", {"enum": ["off", "placeholders"]}),
        ("engine.fitWorkers", {"type": "number", "minimum": 1, "maximum": 64}),
        ("engine.fitWorkers", {"type": "integer", "minimum": 0, "maximum": 64}),
        ("engine.fitWorkers", {"type": "integer", "minimum": 1}),
        ("engine.tickSeconds", {"type": "number", "minimum": 0, "maximum": 60}),
        ("grpc.port", {"type": "string"}),
    ],
)
def test_the_chart_check_catches_drift(path: str, chart_field: dict[str, Any]) -> None:
    daemon_field = _at(settings_schema(), path)
    assert daemon_field is not None
    with pytest.raises(AssertionError):
        _assert_agrees(path, chart_field, daemon_field)
