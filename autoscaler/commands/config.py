"""`autoscaler config`: check a daemon configuration file, print its JSON Schema or its reference table."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from autoscaler.settings import ConfigError, load_settings, settings_schema


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="validate a daemon configuration file or print its schema")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser("validate", help="check a YAML configuration file; errors name the setting")
    validate.add_argument("file", help="the YAML file `autoscaler serve --config` would read")
    actions.add_parser("schema", help="print the configuration file's JSON Schema")
    actions.add_parser("reference", help="print the table of every setting (Markdown), as docs/configuration.md")


def run(args: argparse.Namespace) -> int:
    if args.action == "schema":
        print(json.dumps(settings_schema(), indent=2, sort_keys=True))
        return 0
    if args.action == "reference":
        print(reference_table(settings_schema()))
        return 0
    try:
        # The file alone: PA_* variables of the shell that runs the check are not the daemon's.
        load_settings(args.file, environ={})
    except ConfigError as error:
        print(f"{args.file}: invalid: {error}", file=sys.stderr)
        return 1
    print(f"{args.file}: valid")
    return 0


def reference_table(schema: Mapping[str, Any]) -> str:
    """One row per setting, by its path in the file, with its type, default and description."""
    rows = ["| setting | type | default | meaning |", "|---|---|---|---|"]
    definitions = schema.get("$defs", {})
    for path, field in _settings(schema, definitions, prefix=""):
        default = f"`{json.dumps(field['default'])}`" if "default" in field else ""
        meaning = " ".join(str(field.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type_of(field, definitions)} | {default} | {meaning} |")
    return "\n".join(rows)


def _settings(node: Mapping[str, Any], definitions: Mapping[str, Any], *, prefix: str) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for name, field in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        target = _resolved(field, definitions)
        if target.get("type") == "object" and "properties" in target:
            rows.extend(_settings(target, definitions, prefix=f"{path}."))
        elif target.get("type") == "array" and "$ref" in target.get("items", {}):
            rows.append((path, field))
            rows.extend(_settings(_resolved(target["items"], definitions), definitions, prefix=f"{path}[]."))
        else:
            rows.append((path, field))
    return rows


def _resolved(field: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    reference = field.get("$ref")
    if reference is None:
        return field
    resolved: Mapping[str, Any] = definitions[str(reference).rsplit("/", 1)[-1]]
    return resolved


def _type_of(field: Mapping[str, Any], definitions: Mapping[str, Any]) -> str:
    if "enum" in field:
        return " \\| ".join(f"`{value}`" for value in field["enum"])
    if "anyOf" in field:
        return " or ".join(_type_of(option, definitions) for option in field["anyOf"])
    target = _resolved(field, definitions)
    if "enum" in target:
        return _type_of(target, definitions)
    kind = str(target.get("type", "object"))
    bounds = [
        f"{symbol} {target[key]}"
        for key, symbol in (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"), ("maximum", "<="))
        if key in target
    ]
    if kind == "array":
        return f"list of {_type_of(target.get('items', {}), definitions)}"
    return f"{kind} ({', '.join(bounds)})" if bounds else kind
