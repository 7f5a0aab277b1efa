"""Kill the daemon replica that serves KEDA, on the real chain (issue 16).

The chart runs two daemon replicas behind one Service, and KEDA's connection may land
on either. Here two ``autoscaler serve`` processes (same command, same Prometheus) sit
behind a :class:`ServiceForwarder` that plays the Service, and the ScaledObject's
external trigger points at the forwarder. The rest is the real chain of
test_keda_chain.py: control plane, KEDA's operator and metrics adapter, KEDA's HPA, and
a Prometheus replaying the NASA trace (Tuesday 11 July 1995 from 06:52, into the
morning rise; 4-minute bins, one per 10 s of wall time, two trace days of history).

Both replicas know the target: KEDA registers it on the replica its connection reaches,
and a probe of the test's calls GetMetrics on each replica directly, as KEDA's
components would if their connections landed on different replicas. The probe reaches
the other replica ``STAGGER_STEPS`` later, as replicas that started at different times
(a rollout, an earlier restart) would. Once the HPA follows the plan and both answer,
the replica that carries KEDA's connection is SIGKILLed; KEDA reconnects through the
forwarder to the survivor. After several steps the killed replica is started again.

Once a second the test reads the HPA's desired replicas, the ScaledObject's Fallback
condition, both replicas' GetMetrics answers and their plans from the inspection API,
and which backend received KEDA's bytes. It prints a table per step and requires:

- the two replicas answer the same at every step before the kill, and their planning
  state (the inspection detail's history, forecast, model selection, coverage and
  decision) is identical at the kill's step: a different model, calibrator or damping
  state fails here even while the rounded answers agree, and the failure lists where
  the two details differ (both are written to artifacts/failover-chain/);
- the HPA's desired replicas are, at every moment, a plan that the replica serving
  KEDA made in the few seconds before (the survivor's after the kill): a change at the
  kill is one the plan made, never a jump;
- KEDA never applies its fallback replicas, and its connection moved to the survivor;
- the restarted replica answers as the survivor does from its first servable answer,
  and its planning state equals the survivor's at the end.

Run: ``.venv/bin/pytest -m e2e -s tests/e2e/test_failover_chain.py`` (needs the KEDA
build, ``tests/harness/build_keda.sh``; see docs/keda-chain.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes.client.exceptions import ApiException

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc
from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from tests.e2e.keda_crds import install_crds
from tests.e2e.kube_chain import (
    NAMESPACE,
    Kube,
    SecondlyPoller,
    daemon_command,
    gpu_deployment,
    hpa_control_plane,
    http_ok,
)
from tests.e2e.replay import TraceReplay, load_compressed_trace
from tests.e2e.service_forwarder import ServiceForwarder
from tests.e2e.serving_chain import scaled_object
from tests.e2e.test_keda_chain import keda_binaries  # noqa: F401 - the fixture
from tests.e2e.waiting import wait_for
from tests.harness.cluster import HarnessError, build_binaries, free_port
from tests.harness.keda import Keda, KedaBinaries
from tests.integration.prometheus_server import MetricsExporter, PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_DIR = REPO_ROOT / "artifacts" / "failover-chain"

NAME = "failover"
METRIC = "nasa_http_requests"
TRACE = "nasa_http_jul95"
BIN_STEPS = 4
WALL_STEP_S = 10.0
REPLAY_DAY = 10  # Tuesday 11 July 1995
REPLAY_FROM_HOUR = 6 + 52 / 60  # the rise from about 07:30 comes as the kill does
REPLAY_TO_HOUR = 9.0
HISTORY_DAYS = 2  # two wall hours backfilled
HISTORY_WINDOW_HOURS = HISTORY_DAYS + 1
"""All the data stays inside every daemon's window through the run, whenever it starts:
a warm start then replays all of it, and its state equals the survivor's exactly."""
CAPACITY_PER_REPLICA = 100.0  # requests per 4-minute bin: plans of 2 to 4 replicas over the run
MAX_REPLICAS = 10
FALLBACK_REPLICAS = 8  # above any plan of the replay, so a fallback shows in the HPA
FALLBACK_FAILURES = 3
HPA_SYNC_PERIOD_S = 2
POD_READY_DELAY_S = 2.0  # the test reads the HPA's desired replicas, not the pods
GPU_NODES = 3

DAEMONS = ("a", "b")
STAGGER_STEPS = 6
"""The second replica learns of the target this many steps after the first: replicas start
at different times (a rollout, a restart), and their answers must agree all the same."""
STEPS_BEFORE_KILL = 3
"""Steps both replicas answer before the kill: the window in which they must agree."""
STEPS_AFTER_KILL = 6
STEPS_AFTER_RESTART = 3
HPA_LAG_S = 6.0
"""From a plan to the HPA's desired replicas: the HPA syncs every 2 s and reads the metric
through KEDA at each sync; the recorder samples once a second; margin for a loaded machine."""
PLANNING_STATE = ("history", "forecast", "model_selection", "coverage", "forecast_error_mase", "decision")
"""The inspection detail's parts that are a function of the data, and so equal on every replica at one step."""
PROBE_TIMEOUT_S = 0.5
"""The probe's deadline; a replica still warming waits longer than this before UNAVAILABLE."""


def trigger_metadata(scaler_address: str) -> dict[str, str]:
    return {
        "scalerAddress": scaler_address,
        "query": f"sum({METRIC})",
        "metricKind": "load",
        "capacityPerReplica": f"{CAPACITY_PER_REPLICA:g}",
        "step": f"{WALL_STEP_S:g}s",
        "leadTime": "30s",
        "nodeLeadTime": "60s",
        "historyWindow": f"{HISTORY_WINDOW_HOURS}h",  # a trace day is a wall hour
        "minReplicas": "1",
        "maxReplicas": str(MAX_REPLICAS),
        "scaleDownStabilization": "60s",
        "staleAfter": "30s",
    }


# ---------------------------------------------------------------------------- the daemons


@dataclass
class Daemon:
    """One `autoscaler serve` replica on fixed ports, so a restart is found at the same address."""

    name: str
    prometheus_url: str
    log: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = daemon_command(prometheus_url=self.prometheus_url, grpc_port=self.grpc_port, http_port=self.http_port)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        wait_for(
            f"daemon {self.name} /readyz (log {self.log})",
            lambda: http_ok(f"http://127.0.0.1:{self.http_port}/readyz"),
            60,
            0.5,
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def targets(self) -> list[dict[str, Any]]:
        """The inspection API's summaries of NAME's triggers."""
        url = f"http://127.0.0.1:{self.http_port}/api/v1/targets/{NAMESPACE}/{NAME}"
        with urllib.request.urlopen(url, timeout=2) as response:
            targets: list[dict[str, Any]] = json.load(response)["targets"]
        return targets

    def detail(self) -> dict[str, Any]:
        """The one trigger's full inspection detail."""
        summary = self.targets()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{summary['api_url']}", timeout=5) as response:
            detail: dict[str, Any] = json.load(response)
        return detail


@dataclass
class FailoverChain:
    kube: Kube
    replay: TraceReplay
    forwarder: ServiceForwarder
    daemons: dict[str, Daemon]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, keda_binaries: KedaBinaries) -> Iterator[FailoverChain]:  # noqa: F811
    workdir = tmp_path_factory.mktemp("failover")
    cluster = hpa_control_plane(
        build_binaries(),
        workdir / "control-plane",
        pod_ready_delay_s=POD_READY_DELAY_S,
        hpa_sync_period_s=HPA_SYNC_PERIOD_S,
    )
    trace = load_compressed_trace(TRACE, bin_steps=BIN_STEPS, wall_step_seconds=WALL_STEP_S)
    replay = TraceReplay.of_hours(
        trace, MetricsExporter(), METRIC, day=REPLAY_DAY, hours=(REPLAY_FROM_HOUR, REPLAY_TO_HOUR)
    )
    # Each part is stopped, newest first, once started: an ExitStack rather than a
    # finally block that must check which parts got that far.
    with contextlib.ExitStack() as started:
        try:
            cluster.start()
            started.callback(cluster.stop)
            cluster.wait_for_nodes_ready(cluster.create_fake_gpu_nodes(GPU_NODES))
            with cluster.api_client() as api:
                install_crds(api, keda_binaries.version)
            keda = Keda(cluster, keda_binaries, workdir / "keda")
            keda.start()
            started.callback(keda.stop)
            kube = started.enter_context(contextlib.closing(Kube(cluster)))
            replay.exporter.start()
            started.callback(replay.exporter.stop)
            prometheus = PrometheusServer(workdir / "prometheus")
            prometheus.scrape_target = replay.exporter.address
            # Room for Prometheus to start; the replay's value changes in the middle of the daemons' steps (they
            # collect on the step grid), so both replicas are given the same data and a difference is their own.
            start_at = (math.ceil(time.time() / WALL_STEP_S) + 2.5) * WALL_STEP_S
            prometheus.backfill([replay.history(end=start_at - WALL_STEP_S, steps=HISTORY_DAYS * trace.steps_per_day)])
            replay.start(at=start_at)
            started.callback(replay.stop)
            prometheus.start()
            started.callback(prometheus.stop)
            daemons: dict[str, Daemon] = {}
            for name in DAEMONS:
                daemons[name] = Daemon(name, prometheus.url, workdir / f"daemon-{name}.log")
                daemons[name].start()
                started.callback(daemons[name].stop)
            forwarder = started.enter_context(
                ServiceForwarder({name: daemon.grpc_port for name, daemon in daemons.items()})
            )
        except HarnessError as error:
            pytest.fail(f"the chain failed to start: {error}", pytrace=False)
        yield FailoverChain(kube, replay, forwarder, daemons)


# ---------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Reading:
    """One replica at one moment: its GetMetrics answer (or the error's code) and its plan."""

    answer: int | None
    error: str | None
    plan: int | None


@dataclass(frozen=True)
class Sample:
    at: float
    desired: int | None
    """The HPA's status.desiredReplicas."""
    fallback: str | None
    """The ScaledObject's Fallback condition."""
    readings: dict[str, Reading]
    served: tuple[str, ...]
    """The backends that received KEDA's bytes since the previous sample."""


class Probe:
    """GetMetrics on replicas directly, with the metadata KEDA sends: the same target.

    A replica is called only once `add`ed: its target is registered from then on.
    """

    def __init__(self, daemons: dict[str, Daemon], metadata: dict[str, str]) -> None:
        own = {key: value for key, value in metadata.items() if key != "scalerAddress"}
        key = target_key(NAMESPACE, NAME, own)
        ref = pb2.ScaledObjectRef(name=NAME, namespace=NAMESPACE, scalerMetadata=metadata)
        self._request = pb2.GetMetricsRequest(scaledObjectRef=ref, metricName=metric_name_for(key, parse_spec(own)))
        # Reconnect at once when a replica is back: the default backoff grows past a minute.
        options = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
        self._channels = {
            name: grpc.insecure_channel(f"127.0.0.1:{daemon.grpc_port}", options=options)
            for name, daemon in daemons.items()
        }
        self._stubs = {name: pb2_grpc.ExternalScalerStub(channel) for name, channel in self._channels.items()}
        self._probed: set[str] = set()

    def add(self, name: str) -> None:
        self._probed.add(name)

    def answer(self, name: str) -> tuple[int | None, str | None]:
        """The replica's GetMetrics value, or None and the error's code (None when not probed)."""
        if name not in self._probed:
            return None, None
        try:
            response = self._stubs[name].GetMetrics(self._request, timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as error:
            return None, error.code().name
        value: int = response.metricValues[0].metricValue
        return value, None

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def _plan(daemon: Daemon) -> int | None:
    try:
        targets = daemon.targets()
    except (OSError, ValueError, KeyError):
        return None
    plan = targets[0].get("planned_replicas") if targets else None
    return int(plan) if plan is not None else None


def _desired_replicas(kube: Kube) -> int | None:
    """KEDA's HPA's status.desiredReplicas; None before KEDA made the HPA."""
    try:
        hpa = kube.autoscaling.read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{NAME}", NAMESPACE)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return int(hpa.status.desired_replicas) if hpa.status and hpa.status.desired_replicas is not None else None


class Recorder(SecondlyPoller):
    """Samples the HPA, the ScaledObject, both replicas and the forwarder once a second, in a thread."""

    def __init__(self, chain: FailoverChain, probe: Probe) -> None:
        super().__init__("failover-recorder")
        self._chain, self._probe = chain, probe
        self._received = chain.forwarder.received()
        self.samples: list[Sample] = []
        self.errors: list[str] = []

    def poll(self) -> None:
        chain = self._chain
        try:
            now = time.time()
            answers = {name: self._probe.answer(name) for name in DAEMONS}
            plans = {name: _plan(chain.daemons[name]) for name in DAEMONS}
            received = chain.forwarder.received()
            served = tuple(name for name in DAEMONS if received[name] > self._received[name])
            self._received = received
            readings = {name: Reading(*answers[name], plans[name]) for name in DAEMONS}
            desired = _desired_replicas(chain.kube)
            self.samples.append(Sample(now, desired, chain.kube.condition(NAME, "Fallback"), readings, served))
        except Exception as error:  # a failed read is recorded, not fatal: the next poll may work
            self.errors.append(repr(error))


# ---------------------------------------------------------------------------- checks


def serving(samples: Sequence[Sample]) -> str | None:
    """The one backend that received KEDA's bytes in the newest samples that show any."""
    for sample in reversed(samples):
        if sample.served:
            return sample.served[0] if len(sample.served) == 1 else None
    return None


def follows(samples: Sequence[Sample], polls: int = 3) -> bool:
    """The HPA has shown the serving replica's plan in the last `polls` samples."""
    recent = samples[-polls:]
    backend = serving(samples)
    return (
        len(recent) == polls
        and backend is not None
        and all(s.desired is not None and s.desired == s.readings[backend].plan for s in recent)
    )


def disagreements(
    samples: Sequence[Sample], first: str, second: str, *, since: float, until: float, origin: float
) -> list[str]:
    """Samples in [since, until) where both replicas answered, differently, as in the sample before.

    Two consecutive samples: the replicas collect at the same phase of the step, and a
    read between one's new plan and the other's, a few milliseconds later, is no disagreement.
    """
    found = []
    window = [s for s in samples if since <= s.at < until]
    for before, sample in pairwise(window):
        pairs = [(s.readings[first].answer, s.readings[second].answer) for s in (before, sample)]
        if all(a is not None and b is not None and a != b for a, b in pairs):
            found.append(f"t={sample.at - origin:+.0f}s: {first} answers {pairs[1][0]}, {second} {pairs[1][1]}")
    return found if len(found) <= 6 else [*found[:6], f"... {len(found) - 6} more"]


def unexplained_desired(
    samples: Sequence[Sample], source: str, *, since: float, until: float, origin: float
) -> list[str]:
    """Samples in [since, until) whose HPA desired replicas are no plan `source` made in the HPA_LAG_S before."""
    found = []
    for sample in (s for s in samples if since <= s.at < until and s.desired is not None):
        recent = {s.readings[source].plan for s in samples if sample.at - HPA_LAG_S <= s.at <= sample.at}
        if sample.desired not in recent:
            plans = sorted(p for p in recent if p is not None)
            found.append(f"t={sample.at - origin:+.0f}s: desired {sample.desired}, {source}'s plans {plans}")
    return found


def planning_state(first: Daemon, second: Daemon, attempts: int = 3) -> tuple[dict[str, Any], list[str]]:
    """Both replicas' inspection details at one step, and where their planning state differs.

    Read again while they differ, a few seconds apart within the step, so that a fit
    installed in one a moment before the other is not reported.
    """
    differ: list[str] = []
    for _ in range(attempts):
        details = wait_for(f"{first.name} and {second.name} at one step", lambda: _at_one_step(first, second), 15, 1)
        state = [{key: details[daemon.name].get(key) for key in PLANNING_STATE} for daemon in (first, second)]
        differ = differences(*state)
        if len(differ) > 30:
            differ = [*differ[:30], f"... {len(differ) - 30} more"]
        if not differ:
            break
        time.sleep(2)
    return details, differ


def _at_one_step(first: Daemon, second: Daemon) -> dict[str, Any] | None:
    details = {daemon.name: daemon.detail() for daemon in (first, second)}
    newest = {daemon: detail["history"]["timestamps"][-1] for daemon, detail in details.items()}
    return details if len(set(newest.values())) == 1 else None


def differences(first: Any, second: Any, path: str = "") -> list[str]:
    """Where two inspection details differ, leaf by leaf; a list of numbers counts as one leaf."""
    if isinstance(first, dict) and isinstance(second, dict):
        return [
            line
            for key in sorted(first.keys() | second.keys())
            for line in differences(first.get(key), second.get(key), f"{path}.{key}")
        ]
    if isinstance(first, list) and isinstance(second, list) and len(first) == len(second):
        if all(isinstance(v, dict | list) for v in first + second):
            return [
                line
                for i, (a, b) in enumerate(zip(first, second, strict=True))
                for line in differences(a, b, f"{path}[{i}]")
            ]
        differing = sum(a != b for a, b in zip(first, second, strict=True))
        return [f"{path}: {differing} of {len(first)} values differ"] if differing else []
    return [] if first == second else [f"{path}: {_short(first)} vs {_short(second)}"]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# ---------------------------------------------------------------------------- the table


def _run(values: Sequence[object]) -> str:
    """Values in order, repeats folded: 2>3."""
    return ">".join("-" if key is None else str(key) for key, _ in groupby(values))


ERROR_CODES = {"DEADLINE_EXCEEDED": "wait", "UNAVAILABLE": "unav"}
"""The probe's errors as the table shows them: a replica still warming, one that is down."""


def _reading(reading: Reading) -> object:
    return reading.answer if reading.error is None else ERROR_CODES.get(reading.error, reading.error)


def table(samples: Sequence[Sample], *, step_origin: float, killed_at: float, victim: str) -> str:
    """One row per step from `step_origin`: what the HPA wanted, each replica answered and planned."""
    head = f"{'step':>4} {'t-kill':>7} {'desired':>8} " + " ".join(
        f"{name + (' (killed)' if name == victim else '') + ' plan/answer':>26}" for name in DAEMONS
    )
    lines = [
        "plan: the inspection API's; answer: GetMetrics, wait = still warming past the probe's deadline, "
        "unav = UNAVAILABLE, - = not asked; KEDA on: the backend(s) that received KEDA's bytes",
        head + f" {'KEDA on':>8} {'fallback':>8}",
    ]
    by_step = groupby(samples, key=lambda s: int((s.at - step_origin) // WALL_STEP_S))
    for step, group in by_step:
        rows = list(group)
        cells = [
            f"{_run([s.readings[name].plan for s in rows])}/{_run([_reading(s.readings[name]) for s in rows])}"
            for name in DAEMONS
        ]
        served = _run([",".join(s.served) for s in rows if s.served]) or "-"
        lines.append(
            f"{step:>4} {rows[0].at - killed_at:>+7.0f} {_run([s.desired for s in rows]):>8} "
            + " ".join(f"{cell:>26}" for cell in cells)
            + f" {served:>8} {_run([s.fallback for s in rows]):>8}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the test


def test_killing_the_replica_that_serves_keda_moves_no_replica(chain: FailoverChain) -> None:
    started = time.monotonic()
    kube, daemons = chain.kube, chain.daemons
    metadata = trigger_metadata(chain.forwarder.address)
    body = scaled_object(NAME, metadata, hpa_scale_down_window_s=0)
    body["spec"]["fallback"] = {"failureThreshold": FALLBACK_FAILURES, "replicas": FALLBACK_REPLICAS}
    kube.apps.create_namespaced_deployment(NAMESPACE, gpu_deployment(NAME, replicas=1))
    kube.custom.create_namespaced_custom_object("keda.sh", "v1alpha1", NAMESPACE, "scaledobjects", body)
    probe = Probe(daemons, metadata)
    try:
        with Recorder(chain, probe) as recorder:
            first = wait_for("KEDA's first connection", lambda: serving(recorder.samples), 60, 0.5)
            second = next(name for name in DAEMONS if name != first)
            probe.add(first)
            wait_for(f"ScaledObject {NAME} Ready", lambda: kube.condition(NAME, "Ready") == "True", 90, 0.5)
            time.sleep(STAGGER_STEPS * WALL_STEP_S)
            probe.add(second)
            wait_for(
                "the HPA to follow the plan of the replica serving KEDA", lambda: follows(recorder.samples), 120, 1
            )
            wait_for(f"{second}'s first answer", lambda: recorder.samples[-1].readings[second].answer, 60, 1)
            followed_at = time.time()
            time.sleep(STEPS_BEFORE_KILL * WALL_STEP_S)
            victim = wait_for("one backend to carry KEDA's connection", lambda: serving(recorder.samples), 10, 0.5)
            survivor = next(name for name in DAEMONS if name != victim)
            at_kill, differ_at_kill = planning_state(daemons[victim], daemons[survivor])
            killed_at = time.time()
            daemons[victim].kill()
            time.sleep(STEPS_AFTER_KILL * WALL_STEP_S)
            daemons[victim].start()
            restarted_at = time.time()
            first_answer = wait_for(
                f"restarted daemon {victim}'s first answer",
                lambda: next(
                    (s for s in recorder.samples if s.at > restarted_at and s.readings[victim].answer is not None), None
                ),
                90,
                1,
            )
            time.sleep(STEPS_AFTER_RESTART * WALL_STEP_S)
            after_restart, differ_after_restart = planning_state(daemons[victim], daemons[survivor])
        samples = list(recorder.samples)
        ended_at = samples[-1].at + 1
        target_counts = {name: len(daemon.targets()) for name, daemon in daemons.items()}
    finally:
        probe.close()

    grid_step = chain.replay.started_at - WALL_STEP_S / 2  # a row per daemon step, not per replay step
    printed = table(samples, step_origin=grid_step, killed_at=killed_at, victim=victim)
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    for moment, details in (("at-kill", at_kill), ("after-restart", after_restart)):
        for name, detail in details.items():
            (ARTIFACT_DIR / f"{moment}-{name}.json").write_text(json.dumps(detail, indent=1))
    (ARTIFACT_DIR / "table.txt").write_text(printed + "\n")
    restart = f"restarted at t={restarted_at - killed_at:+.0f}s, first answer at t={first_answer.at - killed_at:+.0f}s"
    print(f"\n{printed}\n{first} first, {second} {STAGGER_STEPS} steps later; killed {victim} at t=0; {restart}; "
          f"wall time {time.monotonic() - started:.0f}s")  # fmt: skip

    problems: list[str] = []
    # One target per replica: KEDA's calls and the probe's reach the same trigger.
    if target_counts != dict.fromkeys(DAEMONS, 1):
        problems.append(f"triggers listed per replica for {NAME}: {target_counts} (expected one each)")
    if differ := disagreements(samples, victim, survivor, since=samples[0].at, until=killed_at, origin=killed_at):
        problems.append(f"the replicas answered differently before the kill: {differ}")
    if not any(s.readings[survivor].answer is not None for s in samples if killed_at - WALL_STEP_S <= s.at < killed_at):
        problems.append(f"the survivor {survivor} gave no answer in the step before the kill: nothing to compare")
    if differ_at_kill:
        problems.append(
            f"the replicas' planning state differed at the kill ({victim} vs {survivor}, step "
            f"{at_kill[victim]['history']['timestamps'][-1] - killed_at:+.0f}s; {ARTIFACT_DIR}/at-kill-*.json):\n  "
            + "\n  ".join(differ_at_kill)
        )
    if jumps := unexplained_desired(samples, victim, since=followed_at, until=killed_at, origin=killed_at):
        problems.append(f"before the kill the HPA did not follow {victim}'s plan: {jumps}")
    if jumps := unexplained_desired(samples, survivor, since=killed_at, until=ended_at, origin=killed_at):
        problems.append(f"after the kill the HPA's desired replicas are not the survivor {survivor}'s plan: {jumps}")
    if fallbacks := [round(s.at - killed_at) for s in samples if s.fallback == "True"]:
        problems.append(f"KEDA applied its fallback replicas at t={fallbacks}s")
    if not any(s.at > killed_at and survivor in s.served for s in samples):
        problems.append(f"KEDA's connection never reached the survivor {survivor} after the kill")
    if differ := disagreements(samples, victim, survivor, since=first_answer.at, until=ended_at, origin=killed_at):
        problems.append(f"the restarted {victim} answered differently from {survivor}: {differ}")
    if differ_after_restart:
        problems.append(
            f"the restarted {victim}'s planning state differed from {survivor}'s at the end "
            f"({ARTIFACT_DIR}/after-restart-*.json):\n  " + "\n  ".join(differ_after_restart)
        )
    assert not problems, "\n".join([*problems, printed, f"recorder errors: {recorder.errors[:3]}"])
