"""The chart's copies of the RBAC rules and the dashboard match their sources.

Helm reads only files inside the chart directory, so the chart carries copies. A
copy that drifts would give the daemon other permissions than the ones the actuator's
RBAC test proved, or ship a stale dashboard.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.deploy_files import CHART_DIR, CHART_FILE_SOURCES, REPO_ROOT

RULE_LISTS = ("clusterRules", "namespaceRules", "leaseRules")


@pytest.mark.parametrize("copy", sorted(CHART_FILE_SOURCES), ids=lambda p: p.name)
def test_chart_copy_is_identical_to_its_source(copy: Path) -> None:
    source = CHART_FILE_SOURCES[copy]
    assert source.is_file(), f"{source.relative_to(REPO_ROOT)} is missing"
    assert copy.read_bytes() == source.read_bytes(), (
        f"{copy.relative_to(REPO_ROOT)} differs from {source.relative_to(REPO_ROOT)}; "
        f"run: cp {source.relative_to(REPO_ROOT)} {copy.relative_to(REPO_ROOT)}"
    )


def test_rbac_rules_are_explicit_policy_rules() -> None:
    rules = yaml.safe_load((CHART_DIR / "files" / "rbac-rules.yaml").read_text())
    assert set(rules) >= set(RULE_LISTS)
    for name in RULE_LISTS:
        assert isinstance(rules[name], list), name
        for rule in rules[name]:
            assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}, (name, rule)
            assert rule["verbs"] and rule["resources"], (name, rule)
            # Least privilege: no wildcard anywhere.
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (name, field, rule)


def test_lease_rules_only_touch_leases() -> None:
    rules = yaml.safe_load((CHART_DIR / "files" / "rbac-rules.yaml").read_text())
    for rule in rules["leaseRules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"]
        assert rule["resources"] == ["leases"]


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads((CHART_DIR / "files" / "predictive-autoscaler-dashboard.json").read_text())
    assert isinstance(dashboard.get("title"), str) and dashboard["title"]
    assert isinstance(dashboard.get("panels"), list) and dashboard["panels"]
