"""Kubernetes API faults for the node-buffer actuator, on a real control plane.

The actuator's client reaches the real kube-apiserver through our fault proxy
(tests/integration/fault_proxy.py: plain HTTP in, HTTPS with the admin certificate
out), which breaks chosen requests:

- the API server is unreachable (a closed port): retries with growing backoff, then
  the failure is reported as `error` through the loop's `on_result` and counted in
  /metrics (`count_actuation`);
- 429 with Retry-After and 503, a few times: retried, honouring Retry-After, then
  written;
- 403 and 409 on the write: not retried (the request itself is refused), reported,
  and the placeholder Deployment written before keeps its spec;
- a concurrent writer that changes the placeholder Deployment: the next pass puts
  our spec back.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes import client

from autoscaler.adapters.kube import ActuatorSettings, KubeActuator, RetryPolicy
from autoscaler.domain.placeholders import SPEC_HASH_ANNOTATION, placeholder_deployment, placeholder_name
from autoscaler.engine.actuation import ActuationLoop
from autoscaler.services.telemetry import Telemetry
from tests.e2e.test_actuator import FakeEngineView, create_workload, publish, target, wait_for
from tests.harness.cluster import ControlPlane
from tests.integration.fault_proxy import Fault, FaultProxy, FaultSetting

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

BUFFER = 2
RETRY = RetryPolicy(attempts=4, base_seconds=0.05, max_seconds=2.0)
# No scheduling is needed: placeholders may stay Pending, only the Deployment matters.
NO_POOL: dict[str, Any] = {"nodeSelector": {"pa-e2e/kube-faults": "none"}, "tolerations": []}


def status_body(code: int, reason: str) -> str:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason}
    )


def on_deployment_writes(method: str, path: str) -> bool:
    return method in {"PATCH", "PUT", "POST"} and "/deployments/" in path


class Recorder:
    """The actuation loop's `on_result`, also feeding a private Telemetry as the daemon does."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str | None]] = []
        self.telemetry = Telemetry(process_metrics=False)

    def __call__(self, _key: object, result: str, error: str | None) -> None:
        self.results.append((result, error))
        self.telemetry.count_actuation(result)

    def metric(self, result: str) -> float:
        prefix = f'_actuation_writes_total{{result="{result}"}} '
        lines = [line for line in self.telemetry.render().splitlines() if prefix in line]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


class SleepLog:
    """The actuator's sleep: records each backoff and sleeps a tenth of it."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds / 10)


@pytest_asyncio.fixture
async def proxy(control_plane: ControlPlane) -> AsyncIterator[FaultProxy]:
    upstream_ssl = ssl.create_default_context(cafile=str(control_plane.ca_file))
    upstream_ssl.load_cert_chain(str(control_plane.admin_cert), str(control_plane.admin_key))
    fault_proxy = FaultProxy(control_plane.server, upstream_ssl=upstream_ssl)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.stop()


def client_for(url: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = url
    return client.ApiClient(configuration)


def actuator_via(url: str, sleep: SleepLog) -> KubeActuator:
    return KubeActuator(
        client_for(url), ActuatorSettings(retry=RETRY, writes_per_minute=600, write_burst=50), sleep=sleep
    )


def read_placeholder(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    apps: Any = client.AppsV1Api(api)
    response = apps.read_namespaced_deployment(placeholder_name("llm"), namespace, _preload_content=False)
    body: dict[str, Any] = json.loads(response.data)
    return body


def assert_spec_intact(api: client.ApiClient, namespace: str, replicas: int) -> None:
    """The placeholder Deployment holds exactly what the actuator wrote for `replicas`."""
    apps: Any = client.AppsV1Api(api)
    workload = json.loads(apps.read_namespaced_deployment("llm", namespace, _preload_content=False).data)
    desired = placeholder_deployment(workload, replicas=replicas, template=ActuatorSettings().placeholder_template)
    current = read_placeholder(api, namespace)
    assert (
        current["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        == (desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION])
    )
    assert current["spec"]["replicas"] == replicas
    wanted_pod, actual_pod = desired["spec"]["template"]["spec"], current["spec"]["template"]["spec"]
    for field in ("priorityClassName", "preemptionPolicy", "nodeSelector"):
        assert actual_pod.get(field) == wanted_pod.get(field), field
    assert [c["image"] for c in actual_pod["containers"]] == [c["image"] for c in wanted_pod["containers"]]
    assert [c.get("resources") for c in actual_pod["containers"]] == [
        c.get("resources") for c in wanted_pod["containers"]
    ]


def tamper(api: client.ApiClient, namespace: str, *, replicas: int | None) -> None:
    """Another writer edits our placeholder: a new container image, and `replicas` if given."""
    current = read_placeholder(api, namespace)
    container = current["spec"]["template"]["spec"]["containers"][0]["name"]
    spec: dict[str, Any] = {
        "template": {"spec": {"containers": [{"name": container, "image": "registry.invalid/tampered:1"}]}}
    }
    if replicas is not None:
        spec["replicas"] = replicas
    apps: Any = client.AppsV1Api(api)
    apps.patch_namespaced_deployment(placeholder_name("llm"), namespace, {"spec": spec})
    image = read_placeholder(api, namespace)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.invalid/tampered:1"


async def one_pass(view: FakeEngineView, actuator: KubeActuator, recorder: Recorder, namespace: str) -> str:
    """Publish a plan for the workload and run one actuation pass; return its result."""
    publish(view, target(namespace, "llm", BUFFER))
    loop = ActuationLoop(view, actuator, on_result=recorder)
    intents = await loop.reconcile(view.snapshot())
    (intent,) = intents.values()
    return intent.result


@pytest.fixture
def workload(api: client.ApiClient, namespace: str) -> str:
    return create_workload(api, namespace, NO_POOL)


async def test_apiserver_unreachable_is_retried_with_backoff_then_reported(
    api: client.ApiClient, namespace: str, workload: str
) -> None:
    closed = FaultProxy("http://127.0.0.1:1")
    await closed.start()
    await closed.set(FaultSetting(Fault.DOWN))
    sleep, recorder = SleepLog(), Recorder()
    try:
        result = await one_pass(FakeEngineView(), actuator_via(closed.url, sleep), recorder, namespace)
    finally:
        await closed.stop()
    assert result == "error"
    assert recorder.results == [("error", recorder.results[0][1])]
    assert "still failing after 4 attempts" in (recorder.results[0][1] or "")
    assert len(sleep.delays) == RETRY.attempts - 1
    ceilings = [min(RETRY.max_seconds, RETRY.base_seconds * 2**attempt) for attempt in range(len(sleep.delays))]
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(sleep.delays, ceilings, strict=True))
    assert recorder.metric("error") == 1.0


@pytest.mark.parametrize(
    ("status", "reason", "retry_after"),
    [(429, "TooManyRequests", 1.0), (503, "ServiceUnavailable", None)],
)
async def test_throttling_and_unavailability_are_retried_then_written(
    *,
    api: client.ApiClient,
    namespace: str,
    workload: str,
    proxy: FaultProxy,
    status: int,
    reason: str,
    retry_after: float | None,
) -> None:
    await proxy.set(
        FaultSetting(
            Fault.HTTP_ERROR,
            status=status,
            body=status_body(status, reason),
            retry_after_seconds=retry_after,
            applies_to=on_deployment_writes,
            times=2,
        )
    )
    sleep, recorder = SleepLog(), Recorder()
    result = await one_pass(FakeEngineView(), actuator_via(proxy.url, sleep), recorder, namespace)
    assert result == "created", recorder.results
    assert proxy.faulted == 2 and len(sleep.delays) == 2
    if retry_after is not None:
        assert all(delay >= retry_after for delay in sleep.delays), sleep.delays
    assert recorder.metric("created") == 1.0
    assert_spec_intact(api, namespace, BUFFER)


@pytest.mark.parametrize(("status", "reason"), [(403, "Forbidden"), (409, "Conflict")])
async def test_refused_writes_are_not_retried_and_leave_the_placeholder_intact(
    *, api: client.ApiClient, namespace: str, workload: str, proxy: FaultProxy, status: int, reason: str
) -> None:
    view, recorder = FakeEngineView(), Recorder()
    assert await one_pass(view, actuator_via(proxy.url, SleepLog()), recorder, namespace) == "created"
    before = read_placeholder(api, namespace)
    await proxy.set(
        FaultSetting(Fault.HTTP_ERROR, status=status, body=status_body(status, reason), applies_to=on_deployment_writes)
    )
    sleep = SleepLog()
    publish(view, target(namespace, "llm", BUFFER + 1))
    loop = ActuationLoop(view, actuator_via(proxy.url, sleep), on_result=recorder)
    (intent,) = (await loop.reconcile(view.snapshot())).values()
    assert intent.result == "error" and str(status) in (intent.error or ""), intent
    assert proxy.faulted == 1 and sleep.delays == [], "a refused write was retried"
    assert recorder.results[-1][0] == "error" and recorder.metric("error") == 1.0
    after = read_placeholder(api, namespace)
    assert after["metadata"]["generation"] == before["metadata"]["generation"], "the refused write changed the spec"
    assert_spec_intact(api, namespace, BUFFER)


async def pass_after_another_writer(api: client.ApiClient, namespace: str, *, replicas: int | None) -> str:
    """Create the placeholder, let `tamper` change it behind our back, and run the next pass."""
    view, recorder = FakeEngineView(), Recorder()
    actuator = KubeActuator(api, ActuatorSettings(retry=RETRY, writes_per_minute=600, write_burst=50))
    assert await one_pass(view, actuator, recorder, namespace) == "created"
    await asyncio.to_thread(tamper, api, namespace, replicas=replicas)
    return await one_pass(view, actuator, recorder, namespace)


async def test_a_concurrent_writer_is_overwritten_on_the_next_pass(
    api: client.ApiClient, namespace: str, workload: str
) -> None:
    assert await pass_after_another_writer(api, namespace, replicas=7) == "updated"
    wait_for("the placeholder spec restored", lambda: read_placeholder(api, namespace)["spec"]["replicas"] == BUFFER)
    assert_spec_intact(api, namespace, BUFFER)


async def test_a_template_edit_that_keeps_replicas_is_repaired(
    api: client.ApiClient, namespace: str, workload: str
) -> None:
    await pass_after_another_writer(api, namespace, replicas=None)
    assert_spec_intact(api, namespace, BUFFER)
