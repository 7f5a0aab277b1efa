"""Offline half of the dependency audit: every dependency is pinned, and the allow-list explains itself.

The online half, pip-audit against PyPI's advisories, is tests/security/audit.sh.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "tests" / "constraints.txt"
ALLOWLIST = REPO / "tests" / "security" / "pip-audit-allowlist.txt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
_ADVISORY = re.compile(r"^(GHSA(-[23456789cfghjmpqrvwx]{4}){3}|PYSEC-\d{4}-\d+|CVE-\d{4}-\d{4,})$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    pinned = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        requirement = raw.split("#", 1)[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            assert version, f"{CONSTRAINTS.name}: {requirement!r} is not pinned with =="
            pinned[canonical(name)] = version
    return pinned


def declared() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    names = []
    for requirement in requirements:
        match = _NAME.match(requirement)
        assert match, requirement
        names.append(canonical(match.group(0)))
    return names


@pytest.mark.parametrize("name", declared())
def test_every_declared_dependency_is_pinned(name: str) -> None:
    assert name in pins(), f"{name} is declared in pyproject.toml but has no == pin in {CONSTRAINTS.name}"


def test_allowlist_entries_name_an_advisory_and_a_reason() -> None:
    for number, line in enumerate(ALLOWLIST.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        advisory, _, reason = line.partition(" ")
        assert _ADVISORY.match(advisory), f"line {number}: {advisory!r} is not an advisory id"
        assert len(reason.strip()) >= 20, f"line {number}: {advisory} needs a reason"
