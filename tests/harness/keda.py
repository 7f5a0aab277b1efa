"""KEDA's operator and metrics adapter, run as plain processes against a :class:`ControlPlane`.

The binaries are built from the KEDA Go module by ``build_keda.sh`` and cached in
``${PA_CACHE_DIR}/bin/keda-<KEDA_VERSION>/``. A cold build takes tens of minutes on a
shared 2-core machine, so CI is expected to restore that directory from a cache filled
by a developer session or a dedicated job: with ``PA_KEDA_BUILD=never`` a missing cache
fails loudly instead of starting the build (it never skips).

Wiring, outside the cluster as in it:

- one certificate directory holding ``ca.crt``, ``tls.crt`` and ``tls.key``: the
  operator serves its metrics gRPC service with it (mutual TLS), the adapter dials that
  service and serves the external metrics API with the same pair, as KEDA's own
  manifests mount one secret into both;
- the ``v1beta1.external.metrics.k8s.io`` APIService points at an ExternalName Service
  named ``localhost``: endpoint addresses may not be loopback, so the control plane must
  run with ``aggregator_routing=False`` for the aggregator to dial the name instead;
- both processes authenticate to the apiserver with the admin kubeconfig (KEDA's
  ClusterRoles are not what is under test here).

The CRDs are not installed here: ``tests/e2e/keda_crds.py`` does that from the module.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.harness.cluster import (
    HARNESS_DIR,
    BuildError,
    ControlPlane,
    HarnessError,
    _Pki,
    _wait_until,
    bin_dir,
    free_port,
    load_versions,
    spawn_logged,
    stop_group,
)

BUILD_SCRIPT = HARNESS_DIR / "build_keda.sh"
#: ``never``: fail when the binaries are not cached instead of building them.
BUILD_POLICY_ENV = "PA_KEDA_BUILD"

KEDA_NAMESPACE = "keda"
METRICS_APISERVER_SERVICE = "keda-metrics-apiserver"
OPERATOR_SERVICE = "keda-operator"
EXTERNAL_METRICS_GROUP = "external.metrics.k8s.io"
EXTERNAL_METRICS_APISERVICE = f"v1beta1.{EXTERNAL_METRICS_GROUP}"


@dataclass(frozen=True)
class KedaBinaries:
    operator: Path
    adapter: Path
    version: str

    @classmethod
    def from_cache(cls, versions: Mapping[str, str] | None = None) -> KedaBinaries:
        version = (dict(versions) if versions is not None else load_versions())["KEDA_VERSION"]
        directory = bin_dir("keda", version)
        return cls(operator=directory / "keda-operator", adapter=directory / "keda-adapter", version=version)

    def missing(self) -> list[Path]:
        return [path for path in (self.operator, self.adapter) if not os.access(path, os.X_OK)]


def ensure_keda_binaries(*, log_file: Path | None = None, timeout_s: float = 3 * 3600) -> KedaBinaries:
    """The cached binaries; builds them first unless ``PA_KEDA_BUILD=never``."""
    binaries = KedaBinaries.from_cache()
    if not binaries.missing():
        return binaries
    if os.environ.get(BUILD_POLICY_ENV) == "never":
        raise BuildError(
            f"KEDA {binaries.version} is not cached ({binaries.missing()}) and {BUILD_POLICY_ENV}=never: "
            f"restore ${{PA_CACHE_DIR}}/bin/keda-{binaries.version}/ or run {BUILD_SCRIPT}"
        )
    command = ["bash", str(BUILD_SCRIPT)]
    with contextlib.ExitStack() as stack:
        out: IO[str] = (
            stack.enter_context(log_file.open("w")) if log_file else stack.enter_context(tempfile.TemporaryFile("w+"))
        )
        try:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            raise BuildError(f"{BUILD_SCRIPT} timed out after {timeout_s:.0f}s") from error
        if result.returncode != 0:
            out.flush()
            if log_file is None:
                out.seek(0)
            tail = (log_file.read_text() if log_file else out.read())[-6000:]
            raise BuildError(f"{BUILD_SCRIPT} exited {result.returncode}:\n{tail}")
    missing = binaries.missing()
    if missing:
        raise BuildError(f"{BUILD_SCRIPT} reported success but {missing} are missing")
    return binaries


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, characters: int = 4000) -> str:
        try:
            return self.log.read_bytes()[-characters:].decode(errors="replace")
        except OSError:
            return "<no log>"

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_group(self.popen, timeout_s)


class Keda:
    """KEDA's operator and metrics adapter for one control plane; a context manager."""

    def __init__(self, control_plane: ControlPlane, binaries: KedaBinaries, workdir: Path) -> None:
        if control_plane.aggregator_routing:
            raise HarnessError("KEDA's adapter runs on loopback: start the ControlPlane with aggregator_routing=False")
        self.control_plane = control_plane
        self.binaries = binaries
        self.workdir = workdir
        self.cert_dir = workdir / "certs"
        self.log_dir = workdir / "logs"
        self.operator_grpc_port = 0
        self.adapter_port = 0
        self._processes: dict[str, _Process] = {}

    def __enter__(self) -> Keda:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 120.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_certificates()
            self._start_operator(timeout_s)
            self._start_adapter()
            self._register_api_service()
            self._wait_api_available(timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in reversed(list(self._processes)):
            self._processes.pop(name).stop()

    def logs(self) -> dict[str, str]:
        """The last part of each process's log, for failure reports."""
        return {name: process.tail() for name, process in self._processes.items()}

    def external_metric(self, namespace: str, metric_name: str, scaled_object: str) -> tuple[int, bytes]:
        """GET one external metric through the aggregator, as the HPA controller does."""
        selector = urllib.parse.quote(f"scaledobject.keda.sh/name={scaled_object}")
        return self.control_plane.api_get(
            f"/apis/{EXTERNAL_METRICS_GROUP}/v1beta1/namespaces/{namespace}/{metric_name}?labelSelector={selector}"
        )

    # ------------------------------------------------------------------ setup

    def _write_certificates(self) -> None:
        pki = _Pki(self.cert_dir)
        ca = pki.ca("ca", "pa-e2e-keda-ca")
        names = [
            f"{service}.{KEDA_NAMESPACE}.svc{suffix}"
            for service in (METRICS_APISERVER_SERVICE, OPERATOR_SERVICE)
            for suffix in ("", ".cluster.local")
        ]
        sans = ["DNS:localhost", "IP:127.0.0.1", *(f"DNS:{name}" for name in names)]
        # One pair for server and client use: the adapter is the operator's gRPC client.
        pki.leaf("tls", ca, common_name=METRICS_APISERVER_SERVICE, server_sans=sans, client=True)
        self._ca_bundle = base64.b64encode((self.cert_dir / "ca.crt").read_bytes()).decode()

    def _environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.control_plane.kubeconfig),
            # Out of a pod there is no service-account namespace file to read it from.
            "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
            "POD_NAMESPACE": KEDA_NAMESPACE,
            "WATCH_NAMESPACE": "",
        }

    def _spawn(self, name: str, argv: Sequence[str]) -> _Process:
        log = self.log_dir / f"{name}.log"
        popen = spawn_logged(argv, log, self.workdir, env=self._environment())
        process = _Process(name, popen, log)
        self._processes[name] = process
        return process

    def _alive_or_raise(self, process: _Process) -> None:
        if process.popen.poll() is not None:
            raise HarnessError(
                f"{process.name} exited with {process.popen.returncode}; log {process.log}:\n{process.tail()}"
            )

    def _start_operator(self, timeout_s: float) -> None:
        self.operator_grpc_port = free_port()
        probe_port = free_port()
        ca_dir = self.workdir / "custom-ca"  # scalers' extra CAs: none
        ca_dir.mkdir(exist_ok=True)
        process = self._spawn(
            "keda-operator",
            [
                str(self.binaries.operator),
                "--leader-elect=false",
                "--enable-cert-rotation=false",
                f"--cert-dir={self.cert_dir}",
                f"--ca-dir={ca_dir}",
                f"--metrics-service-bind-address=127.0.0.1:{self.operator_grpc_port}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                f"--health-probe-bind-address=127.0.0.1:{probe_port}",
                "--zap-log-level=info",
                "--zap-encoder=console",
            ],
        )

        def healthy() -> bool:
            self._alive_or_raise(process)
            with urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/readyz", timeout=2) as response:
                return int(response.status) == 200

        _wait_until("keda-operator /readyz", healthy, timeout_s, on_fail=process.tail)

    def _start_adapter(self) -> None:
        self.adapter_port = free_port()
        kubeconfig = str(self.control_plane.kubeconfig)
        self._spawn(
            "keda-adapter",
            [
                str(self.binaries.adapter),
                "--bind-address=127.0.0.1",
                f"--secure-port={self.adapter_port}",
                f"--cert-dir={self.cert_dir}",
                f"--tls-cert-file={self.cert_dir / 'tls.crt'}",
                f"--tls-private-key-file={self.cert_dir / 'tls.key'}",
                f"--client-ca-file={self.control_plane.ca_file}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--metrics-service-address=127.0.0.1:{self.operator_grpc_port}",
                f"--port={free_port()}",
                "--zap-log-level=info",
            ],
        )

    def _register_api_service(self) -> None:
        from kubernetes import client  # noqa: PLC0415 - optional dependency, imported on use
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        namespace: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}}
        service: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": METRICS_APISERVER_SERVICE, "namespace": KEDA_NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": self.adapter_port}],
            },
        }
        api_service: dict[str, Any] = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": EXTERNAL_METRICS_APISERVICE},
            "spec": {
                "group": EXTERNAL_METRICS_GROUP,
                "version": "v1beta1",
                "service": {"name": METRICS_APISERVER_SERVICE, "namespace": KEDA_NAMESPACE, "port": self.adapter_port},
                "caBundle": self._ca_bundle,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        with self.control_plane.api_client() as api:
            core: Any = client.CoreV1Api(api)
            registration: Any = client.ApiregistrationV1Api(api)
            try:
                core.create_namespace(namespace)
            except ApiException as error:
                if error.status != 409:
                    raise
            with contextlib.suppress(ApiException):
                core.delete_namespaced_service(METRICS_APISERVER_SERVICE, KEDA_NAMESPACE)
            core.create_namespaced_service(KEDA_NAMESPACE, service)
            with contextlib.suppress(ApiException):
                registration.delete_api_service(EXTERNAL_METRICS_APISERVICE)
            registration.create_api_service(api_service)

    def _wait_api_available(self, timeout_s: float) -> None:
        adapter = self._processes["keda-adapter"]

        def served() -> bool:
            self._alive_or_raise(adapter)
            self._alive_or_raise(self._processes["keda-operator"])
            status, _ = self.control_plane.api_get(f"/apis/{EXTERNAL_METRICS_GROUP}/v1beta1")
            return status == 200

        _wait_until(
            f"APIService {EXTERNAL_METRICS_APISERVICE} served by keda-adapter on port {self.adapter_port}",
            served,
            timeout_s,
            interval_s=0.5,
            on_fail=adapter.tail,
        )
