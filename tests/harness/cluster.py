"""A real Kubernetes control plane on loopback, for end-to-end tests.

The binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kwok) are built from Go modules by the scripts next to this file and cached in
``${PA_CACHE_DIR:-~/.cache/predictive-autoscaler}/bin``. :class:`ControlPlane`
then runs them as plain processes on 127.0.0.1 with random free ports, in a
temporary directory holding certificates, kubeconfigs, etcd data and one log
file per process (``<workdir>/logs/<name>.log``).

There is no kubelet: nodes are fake ones driven by kwok, which only manages
nodes carrying the annotation ``kwok.x-k8s.io/node: fake`` and plays the
Stages in ``kwok/stages.yaml`` (nodes become Ready and heartbeat, bound pods
become Running/Ready after a configurable delay, deleted pods disappear).

Only the standard library is needed to start and stop the cluster; the
``kubernetes`` client is imported lazily by the helpers that use it.

Example::

    binaries = build_binaries()
    with ControlPlane(binaries) as cp:
        cp.create_fake_gpu_nodes(2)
        cp.wait_for_nodes_ready(["gpu-node-0", "gpu-node-1"])
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

HARNESS_DIR = Path(__file__).resolve().parent
VERSIONS_FILE = HARNESS_DIR / "versions.env"
BUILD_ALL = HARNESS_DIR / "build_all.sh"
KWOK_STAGES_TEMPLATE = HARNESS_DIR / "kwok" / "stages.yaml"

#: Annotation selecting the nodes kwok manages (``--manage-nodes-with-annotation-selector``).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"
#: Pod annotation overriding the pod-ready delay for that pod (a Go duration such as "5s").
POD_READY_DELAY_ANNOTATION = "e2e.predictive-autoscaler.io/pod-ready-delay"

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# Pod IPs kwok writes into pod status. Nothing ever connects to them (there is
# no kube-proxy and no container); keeping them on loopback guarantees that
# nothing could leave the machine even if something tried.
FAKE_POD_CIDR = "127.20.0.0/16"
FAKE_NODE_IP = "127.0.0.1"

COMPONENTS_FOR_CLUSTER = ("etcd", "kwok", "kubernetes")


class HarnessError(RuntimeError):
    """The harness could not build or start the control plane."""


class BuildError(HarnessError):
    """A build script failed; the message carries the tail of its output."""


# --------------------------------------------------------------------------
# versions and binaries


def load_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the KEY=VALUE lines of versions.env."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip().strip("\"'")
    return versions


def cache_dir() -> Path:
    env = os.environ.get("PA_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "predictive-autoscaler"


def bin_dir(name: str, version: str) -> Path:
    return cache_dir() / "bin" / f"{name}-{version}"


@dataclass(frozen=True)
class Binaries:
    """Paths of the built executables."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kube_version: str

    @classmethod
    def from_cache(cls, versions: Mapping[str, str] | None = None) -> Binaries:
        v = dict(versions) if versions is not None else load_versions()
        kube = bin_dir("kubernetes", v["KUBE_VERSION"])
        return cls(
            etcd=bin_dir("etcd", v["ETCD_VERSION"]) / "etcd",
            kube_apiserver=kube / "kube-apiserver",
            kube_controller_manager=kube / "kube-controller-manager",
            kube_scheduler=kube / "kube-scheduler",
            kwok=bin_dir("kwok", v["KWOK_VERSION"]) / "kwok",
            kube_version=v["KUBE_VERSION"],
        )

    def missing(self) -> list[Path]:
        paths = [self.etcd, self.kube_apiserver, self.kube_controller_manager, self.kube_scheduler, self.kwok]
        return [p for p in paths if not os.access(p, os.X_OK)]


def build_binaries(
    components: Sequence[str] = COMPONENTS_FOR_CLUSTER,
    *,
    log_file: Path | None = None,
    timeout_s: float = 3 * 3600,
) -> Binaries:
    """Run build_all.sh for ``components`` (a no-op when cached) and return the paths.

    Raises :class:`BuildError` with the tail of the build output on failure.
    """
    cmd = ["bash", str(BUILD_ALL), *components]
    out: IO[str]
    with contextlib.ExitStack() as stack:
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(log_file.open("w"))
        else:
            out = stack.enter_context(tempfile.TemporaryFile("w+"))
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"{' '.join(cmd)} timed out after {timeout_s:.0f}s") from exc
        if proc.returncode != 0:
            out.flush()
            text = (log_file.read_text() if log_file is not None else _read_back(out))[-6000:]
            raise BuildError(
                f"building the e2e binaries failed: `{' '.join(cmd)}` exited {proc.returncode}.\n"
                f"--- last build output ---\n{text}"
            )
    binaries = Binaries.from_cache()
    missing = binaries.missing()
    if missing:
        raise BuildError(f"build reported success but binaries are missing: {missing}")
    return binaries


def _read_back(f: IO[str]) -> str:
    f.seek(0)
    return f.read()


# --------------------------------------------------------------------------
# small utilities


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run(cmd: Sequence[str], cwd: Path) -> None:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")


def _b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _wait_until(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    interval_s: float = 0.25,
    on_fail: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except HarnessError:
            raise
        except Exception as exc:  # readiness probes fail in many ways while starting
            last_exc = exc
        time.sleep(interval_s)
    detail = f" (last error: {last_exc!r})" if last_exc else ""
    extra = f"\n{on_fail()}" if on_fail else ""
    raise HarnessError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}{extra}")


# --------------------------------------------------------------------------
# certificates (openssl CLI)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


class _Pki:
    """Generates the CAs and certificates the control plane needs, with openssl."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        if shutil.which("openssl") is None:
            raise HarnessError("the e2e harness needs the `openssl` command (apt-get install openssl)")

    def _key(self, name: str) -> Path:
        key = self.dir / f"{name}.key"
        _run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                str(key),
            ],
            self.dir,
        )
        return key

    def ca(self, name: str, common_name: str) -> CertPair:
        key = self._key(name)
        cert = self.dir / f"{name}.crt"
        _run(
            [
                "openssl", "req", "-x509", "-new", "-key", str(key), "-out", str(cert),
                "-days", "3650", "-subj", f"/CN={common_name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            ],
            self.dir,
        )  # fmt: skip
        return CertPair(cert, key)

    def leaf(
        self,
        name: str,
        ca: CertPair,
        *,
        common_name: str,
        organizations: Iterable[str] = (),
        server_sans: Iterable[str] = (),
        client: bool = True,
    ) -> CertPair:
        key = self._key(name)
        csr = self.dir / f"{name}.csr"
        cert = self.dir / f"{name}.crt"
        subj = "".join(f"/O={o}" for o in organizations) + f"/CN={common_name}"
        _run(["openssl", "req", "-new", "-key", str(key), "-out", str(csr), "-subj", subj], self.dir)
        sans = list(server_sans)
        usages = (["serverAuth"] if sans else []) + (["clientAuth"] if client else [])
        ext = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={','.join(usages)}",
        ]
        if sans:
            ext.append("subjectAltName=" + ",".join(sans))
        ext_file = self.dir / f"{name}.ext"
        ext_file.write_text("\n".join(ext) + "\n")
        _run(
            [
                "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "365",
                "-extfile", str(ext_file), "-out", str(cert),
            ],
            self.dir,
        )  # fmt: skip
        return CertPair(cert, key)

    def signing_key(self, name: str) -> tuple[Path, Path]:
        key = self._key(name)
        pub = self.dir / f"{name}.pub"
        _run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], self.dir)
        return key, pub


# --------------------------------------------------------------------------
# processes


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n_bytes: int = 4000) -> str:
        try:
            data = self.log.read_bytes()[-n_bytes:]
        except OSError:
            return "<no log>"
        return data.decode(errors="replace")


@dataclass
class FakeNodeSpec:
    """Shape of a kwok fake node."""

    gpus: int = 4
    cpu: str = "32"
    memory: str = "256Gi"
    pods: str = "110"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


def spawn_logged(
    argv: Sequence[str], log: Path, workdir: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` with its output appended to `log` (after the command line itself), in a
    process group of its own, so that stopping it kills its children too."""
    with log.open("ab") as handle:
        handle.write(("$ " + " ".join(argv) + "\n").encode())
        handle.flush()
        return subprocess.Popen(
            list(argv),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=None if env is None else dict(env),
            start_new_session=True,
        )


def stop_group(popen: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM a process started by `spawn_logged` and its children; SIGKILL after `timeout_s`."""
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=timeout_s)


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1.

    ``pod_ready_delay_ms``: how long kwok waits after a pod is bound before
    marking it Running/Ready (a pod's ``POD_READY_DELAY_ANNOTATION`` overrides
    it). ``node_heartbeat_ms``: period of the fake nodes' status heartbeat.
    ``job_pod_run_ms``: how long a Job's pod runs before it succeeds.
    ``aggregator_routing``: ``--enable-aggregator-routing`` (False lets an APIService
    reach a process on loopback through an ExternalName Service).
    ``controller_manager_args``: extra kube-controller-manager flags, appended last
    (e.g. a shorter ``--horizontal-pod-autoscaler-sync-period``).

    Attributes available after :meth:`start`: ``server`` (https URL),
    ``kubeconfig`` (admin kubeconfig path, identity in ``system:masters``),
    ``ca_file``, ``admin_cert``/``admin_key``, ``workdir``, ``log_dir``.
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        workdir: Path | None = None,
        pod_ready_delay_ms: int = 0,
        node_heartbeat_ms: int = 10_000,
        job_pod_run_ms: int = 1_000,
        startup_timeout_s: float = 120.0,
        aggregator_routing: bool = True,
        controller_manager_args: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries or Binaries.from_cache()
        missing = self.binaries.missing()
        if missing:
            raise HarnessError(f"missing binaries {missing}; run tests/harness/build_all.sh")
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="pa-e2e-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.workdir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.pki_dir = self.workdir / "pki"
        self.pod_ready_delay_ms = pod_ready_delay_ms
        self.node_heartbeat_ms = node_heartbeat_ms
        self.job_pod_run_ms = job_pod_run_ms
        self.startup_timeout_s = startup_timeout_s
        self.aggregator_routing = aggregator_routing
        self.controller_manager_args = tuple(controller_manager_args)
        self._procs: dict[str, _Proc] = {}
        self._started = False
        self.etcd_client_port = 0
        self.apiserver_port = 0
        self.server = ""
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.ca_file = self.pki_dir / "ca.crt"
        self.admin_cert = self.pki_dir / "admin.crt"
        self.admin_key = self.pki_dir / "admin.key"
        self.front_proxy_ca_file = self.pki_dir / "front-proxy-ca.crt"

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        atexit.register(self.stop)
        try:
            self._generate_pki()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            self._wait_for_default_service_account()
        except BaseException:
            self.stop()
            raise

    def stop(self, remove_workdir: bool = False) -> None:
        """Stop every process (reverse start order). Idempotent."""
        for name in reversed(list(self._procs)):
            self._stop_proc(self._procs.pop(name))
        if remove_workdir and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_proc(self, proc: _Proc, timeout_s: float = 15.0) -> None:
        stop_group(proc.popen, timeout_s)

    def _spawn(self, name: str, argv: Sequence[str]) -> _Proc:
        log = self.log_dir / f"{name}.log"
        proc = _Proc(name, spawn_logged(argv, log, self.workdir), log)
        self._procs[name] = proc
        return proc

    def _wait_healthy(self, proc: _Proc, what: str, check: Callable[[], bool]) -> None:
        def probe() -> bool:
            if not proc.alive():
                raise HarnessError(
                    f"{proc.name} exited with code {proc.popen.returncode} while starting; "
                    f"log {proc.log}:\n{proc.tail()}"
                )
            return check()

        _wait_until(
            what,
            probe,
            self.startup_timeout_s,
            on_fail=lambda: f"log {proc.log}:\n{proc.tail()}",
        )

    def logs(self) -> dict[str, Path]:
        """Log file of each process that was started."""
        return {name: proc.log for name, proc in self._procs.items()}

    def process_status(self) -> dict[str, int | None]:
        """Exit code of each process (None while it is running)."""
        return {name: proc.popen.poll() for name, proc in self._procs.items()}

    # ---------------------------------------------------------------- pki

    def _generate_pki(self) -> None:
        pki = _Pki(self.pki_dir)
        ca = pki.ca("ca", "pa-e2e-kubernetes-ca")
        svc_ip = str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))
        sans = [
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "IP:127.0.0.1",
            f"IP:{svc_ip}",
        ]
        self._apiserver_tls = pki.leaf("apiserver", ca, common_name="kube-apiserver", server_sans=sans, client=False)
        pki.leaf("admin", ca, common_name="pa-e2e-admin", organizations=["system:masters"])
        self._kcm_client = pki.leaf("controller-manager", ca, common_name="system:kube-controller-manager")
        self._scheduler_client = pki.leaf("scheduler", ca, common_name="system:kube-scheduler")
        self._kwok_client = pki.leaf("kwok", ca, common_name="pa-e2e-kwok", organizations=["system:masters"])
        front_ca = pki.ca("front-proxy-ca", "pa-e2e-front-proxy-ca")
        self._front_proxy_client = pki.leaf("front-proxy-client", front_ca, common_name="front-proxy-client")
        self._sa_key, self._sa_pub = pki.signing_key("sa")
        self._ca = ca

    def _write_kubeconfig(self, path: Path, client: CertPair, user: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "pa-e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64_file(self._ca.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64_file(client.cert),
                        "client-key-data": _b64_file(client.key),
                    },
                }
            ],
            "contexts": [{"name": "pa-e2e", "context": {"cluster": "pa-e2e", "user": user}}],
            "current-context": "pa-e2e",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is valid kubeconfig YAML
        path.chmod(0o600)
        return path

    # ---------------------------------------------------------------- etcd

    def _start_etcd(self) -> None:
        self.etcd_client_port = free_port()
        peer_port = free_port()
        client_url = f"http://127.0.0.1:{self.etcd_client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        proc = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=pa-e2e",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=pa-e2e={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throwaway test data: skip fsync for speed
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as resp:
                return bool(json.load(resp).get("health") == "true")

        self._wait_healthy(proc, f"etcd at {client_url}", healthy)

    # ---------------------------------------------------------------- apiserver

    def _admin_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return ctx

    def api_get(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` on the apiserver as admin; returns (status, body)."""
        req = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(req, context=self._admin_ssl_context(), timeout=timeout_s) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    def version(self) -> dict[str, Any]:
        status, body = self.api_get("/version")
        if status != 200:
            raise HarnessError(f"/version returned {status}: {body[:500]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def _start_apiserver(self) -> None:
        self.apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        pki = self.pki_dir
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--etcd-servers=http://127.0.0.1:{self.etcd_client_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={self._apiserver_tls.cert}",
                f"--tls-private-key-file={self._apiserver_tls.key}",
                f"--client-ca-file={self._ca.cert}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=true",  # /livez, /readyz, /healthz stay reachable, as in a real cluster
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self._sa_pub}",
                f"--service-account-signing-key-file={self._sa_key}",
                "--allow-privileged=true",
                # The "kubernetes" Service cannot get a loopback endpoint (validation
                # rejects 127.0.0.0/8); nothing in this cluster needs it, so do not try.
                "--endpoint-reconciler-type=none",
                # Aggregation layer (for an APIService served by a test process later).
                f"--requestheader-client-ca-file={self.front_proxy_ca_file}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={self._front_proxy_client.cert}",
                f"--proxy-client-key-file={self._front_proxy_client.key}",
                # No kube-proxy here: the aggregator must dial endpoint IPs itself.
                # Off, it resolves an APIService's Service by its cluster IP or, for an
                # ExternalName Service, by name: the only way to reach a loopback
                # process, since endpoint addresses may not be loopback.
                f"--enable-aggregator-routing={str(self.aggregator_routing).lower()}",
                "--profiling=false",
                "--v=1",
            ],
        )

        def ready() -> bool:
            status, _ = self.api_get("/readyz")
            return status == 200

        self._wait_healthy(proc, f"kube-apiserver /readyz at {self.server}", ready)
        self._write_kubeconfig(self.kubeconfig, CertPair(self.admin_cert, self.admin_key), "pa-e2e-admin")

    # ---------------------------------------------------------------- controllers

    def _wait_secure_healthz(self, proc: _Proc, port: int) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert of the component

        def healthy() -> bool:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2) as resp:
                return int(resp.status) == 200

        self._wait_healthy(proc, f"{proc.name} /healthz on port {port}", healthy)

    def _start_controller_manager(self) -> None:
        kubeconfig = self._write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig", self._kcm_client, "system:kube-controller-manager"
        )
        port = free_port()
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={self._ca.cert}",
                f"--service-account-private-key-file={self._sa_key}",
                f"--cluster-signing-cert-file={self._ca.cert}",
                f"--cluster-signing-key-file={self._ca.key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allocate-node-cidrs=false",
                # All default controllers. The pinned version's
                # kube-controller-manager has no cloud controllers left
                # (they live in cloud-controller-manager), so there is
                # nothing to subtract.
                "--controllers=*",
                "--profiling=false",
                "--v=1",
                *self.controller_manager_args,
            ],
        )
        self._wait_secure_healthz(proc, port)

    def _start_scheduler(self) -> None:
        kubeconfig = self._write_kubeconfig(
            self.workdir / "scheduler.kubeconfig", self._scheduler_client, "system:kube-scheduler"
        )
        port = free_port()
        proc = self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_secure_healthz(proc, port)

    # ---------------------------------------------------------------- kwok

    def _render_kwok_stages(self) -> Path:
        text = KWOK_STAGES_TEMPLATE.read_text()
        jitter = max(self.node_heartbeat_ms // 2, 1)
        for token, value in {
            "@POD_READY_DELAY_MS@": self.pod_ready_delay_ms,
            "@NODE_HEARTBEAT_MS@": self.node_heartbeat_ms,
            "@NODE_HEARTBEAT_JITTER_MS@": self.node_heartbeat_ms + jitter,
            "@JOB_POD_RUN_MS@": self.job_pod_run_ms,
        }.items():
            text = text.replace(token, str(int(value)))
        leftover = re.findall(r"@[A-Z_]+_MS@", text)
        if leftover:
            raise HarnessError(f"unsubstituted tokens {leftover} in {KWOK_STAGES_TEMPLATE}")
        path = self.workdir / "kwok-stages.yaml"
        path.write_text(text)
        return path

    def _start_kwok(self) -> None:
        kubeconfig = self._write_kubeconfig(self.workdir / "kwok.kubeconfig", self._kwok_client, "pa-e2e-kwok")
        stages = self._render_kwok_stages()
        port = free_port()
        proc = self._spawn(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--config={stages}",
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
                f"--node-ip={FAKE_NODE_IP}",
                f"--cidr={FAKE_POD_CIDR}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{port}",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return int(resp.status) == 200

        self._wait_healthy(proc, f"kwok /healthz on port {port}", healthy)

    def restart_kwok(self, *, pod_ready_delay_ms: int | None = None, node_heartbeat_ms: int | None = None) -> None:
        """Restart kwok, optionally with a new pod-ready delay or node heartbeat period."""
        if pod_ready_delay_ms is not None:
            self.pod_ready_delay_ms = pod_ready_delay_ms
        if node_heartbeat_ms is not None:
            self.node_heartbeat_ms = node_heartbeat_ms
        old = self._procs.pop("kwok", None)
        if old is not None:
            self._stop_proc(old)
        self._start_kwok()

    # ---------------------------------------------------------------- kubernetes client helpers

    def api_client(self) -> ApiClient:
        """A fresh official-client ApiClient authenticated as admin."""
        from kubernetes import config  # noqa: PLC0415 - optional dependency, imported on use

        new_client: Any = config.new_client_from_config  # the client's config module is untyped
        api: ApiClient = new_client(config_file=str(self.kubeconfig))
        return api

    def _wait_for_default_service_account(self) -> None:
        """Pods in ``default`` are only admitted once its ServiceAccount exists."""

        def exists() -> bool:
            status, _ = self.api_get("/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200

        _wait_until("the default ServiceAccount (created by kube-controller-manager)", exists, self.startup_timeout_s)

    def create_fake_gpu_nodes(
        self,
        count: int,
        *,
        name_prefix: str = "gpu-node",
        start_index: int = 0,
        spec: FakeNodeSpec | None = None,
    ) -> list[str]:
        """Create ``count`` kwok-managed nodes with ``nvidia.com/gpu`` capacity; returns their names.

        They become Ready once kwok picks them up; see :meth:`wait_for_nodes_ready`.
        """
        from kubernetes import client  # noqa: PLC0415

        spec = spec or FakeNodeSpec()
        resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods, GPU_RESOURCE: str(spec.gpus)}
        names: list[str] = []
        with self.api_client() as api:
            core: Any = client.CoreV1Api(api)
            for i in range(start_index, start_index + count):
                name = f"{name_prefix}-{i}"
                labels = {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **spec.labels,
                }
                body = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE, **spec.annotations},
                    },
                    "spec": {"taints": list(spec.taints)} if spec.taints else {},
                    "status": {"capacity": resources, "allocatable": dict(resources)},
                }
                core.create_node(body)
                names.append(name)
        return names

    def wait_for_nodes_ready(self, names: Iterable[str], timeout_s: float = 60.0) -> None:
        """Wait until each node is Ready and no longer carries the not-ready/unreachable taints."""
        from kubernetes import client  # noqa: PLC0415

        wanted = list(names)
        with self.api_client() as api:
            core: Any = client.CoreV1Api(api)

            def all_ready() -> bool:
                for name in wanted:
                    node = core.read_node(name)
                    conditions = {c.type: c.status for c in (node.status.conditions or [])}
                    if conditions.get("Ready") != "True":
                        return False
                    taints = {t.key for t in (node.spec.taints or [])}
                    if taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}:
                        return False
                return True

            _wait_until(f"nodes {wanted} to become Ready", all_ready, timeout_s, interval_s=0.5)

    def iter_logs(self) -> Iterator[tuple[str, str]]:
        """(process name, last part of its log) for every process, for diagnostics."""
        for name, proc in self._procs.items():
            yield name, proc.tail()
