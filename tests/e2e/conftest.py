"""Fixtures for end-to-end tests against a real control plane on loopback.

``control_plane`` (session scope) builds the binaries with
tests/harness/build_all.sh (a no-op once cached under
``${PA_CACHE_DIR:-~/.cache/predictive-autoscaler}``; a cold build takes tens
of minutes on 2 cores) and starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok. A failed build or start
fails the tests with the relevant log output; it never skips.

The process logs stay in pytest's temporary directory
(``<basetemp>/control-plane0/logs``); a failing test's report names it.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:  # make `tests.harness` importable however pytest was started
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.waiting import exists, wait_for  # noqa: E402
from tests.harness.cluster import (  # noqa: E402
    BuildError,
    ControlPlane,
    HarnessError,
    build_binaries,
)

_started: list[ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    build_log = tmp_path_factory.mktemp("harness-build") / "build.log"
    try:
        binaries = build_binaries(log_file=build_log)
    except BuildError as exc:
        pytest.fail(
            f"e2e harness build failed (full log: {build_log}); run tests/harness/build_all.sh to reproduce.\n{exc}",
            pytrace=False,
        )
    cp = ControlPlane(binaries, workdir=tmp_path_factory.mktemp("control-plane"))
    try:
        cp.start()
    except HarnessError as exc:
        pytest.fail(f"control plane failed to start (logs in {cp.log_dir}):\n{exc}", pytrace=False)
    _started.append(cp)
    try:
        yield cp
    finally:
        _started.remove(cp)
        cp.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    if _started and getattr(report, "failed", False) and "control_plane" in getattr(item, "fixturenames", ()):
        cp = _started[0]
        lines = [f"process logs: {cp.log_dir}", f"process exit codes (None = running): {cp.process_status()}"]
        for name, tail in cp.iter_logs():
            lines.append(f"--- {name} (last lines) ---\n{tail[-1500:]}")
        report.sections.append(("control plane", "\n".join(lines)))  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with control_plane.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted afterwards; pods are admitted only once its default ServiceAccount exists."""
    core: Any = client.CoreV1Api(api)
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        f"ServiceAccount {name}/default", lambda: exists(lambda: core.read_namespaced_service_account("default", name))
    )
    yield name
    core.delete_namespace(name)
