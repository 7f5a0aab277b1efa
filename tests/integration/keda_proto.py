"""KEDA's own externalscaler.proto, fetched from the KEDA Go module and compiled at test time.

The stubs are an independent client for our server: nothing of ours goes into them.
They are loaded into a private descriptor pool because our server's generated code
already holds the same message names (`externalscaler.*`) in the default pool, exactly
as two separate processes would each hold their own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tests.harness.cluster import load_versions

KEDA_MODULE = "github.com/kedacore/keda/v2"
_VERSIONS = load_versions()
KEDA_VERSION = _VERSIONS["KEDA_VERSION"]
"""The version whose proto our own must state exactly (pinned in tests/harness/versions.env)."""
KEDA_NEWER_VERSION = _VERSIONS["KEDA_NEWER_VERSION"]
"""A newer KEDA whose proto adds the optional StreamMetricSpec; its client must still work."""
PROTO_IN_MODULE = Path("pkg/scalers/externalscaler/externalscaler.proto")
_DEFAULT_POOL = "_descriptor_pool.Default()"
_PRIVATE_POOL = "_descriptor_pool.DescriptorPool()"


class KedaProtoUnavailableError(RuntimeError):
    """KEDA's proto could not be obtained or compiled; the message says which step failed."""


@dataclass(frozen=True)
class KedaStubs:
    version: str
    proto_file: Path
    messages: ModuleType  # externalscaler_pb2
    services: ModuleType  # externalscaler_pb2_grpc


def download_keda_module(version: str = KEDA_VERSION, *, timeout: float = 600.0) -> Path:
    """`go mod download` the KEDA module (cached in GOMODCACHE); return its directory."""
    go = shutil.which("go")
    if go is None:
        raise KedaProtoUnavailableError("the `go` command is not on PATH; it is needed to fetch KEDA's proto")
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    command = [go, "mod", "download", "-json", f"{KEDA_MODULE}@{version}"]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout, cwd=Path.home(), check=False
        )
    except subprocess.TimeoutExpired as error:
        raise KedaProtoUnavailableError(f"`{' '.join(command)}` timed out after {timeout:g}s") from error
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise KedaProtoUnavailableError(
            f"`{' '.join(command)}` exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}"
        ) from error
    if "Error" in info or "Dir" not in info:
        raise KedaProtoUnavailableError(f"`{' '.join(command)}` failed: {info.get('Error', info)}")
    return Path(info["Dir"])


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise KedaProtoUnavailableError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_keda_stubs(module_dir: Path, out_dir: Path, version: str = KEDA_VERSION) -> KedaStubs:
    """Compile KEDA's proto with grpc_tools into `out_dir` and import the stubs."""
    from grpc_tools import protoc  # noqa: PLC0415  (a test-time dependency only)

    proto = module_dir / PROTO_IN_MODULE
    if not proto.is_file():
        raise KedaProtoUnavailableError(f"{PROTO_IN_MODULE} is not in {KEDA_MODULE}@{version} ({module_dir})")
    out_dir.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            proto.name,
        ]
    )
    if status != 0:
        raise KedaProtoUnavailableError(f"protoc failed with status {status} on {proto}")
    messages_file = out_dir / "externalscaler_pb2.py"
    source = messages_file.read_text()
    if source.count(_DEFAULT_POOL) != 1:
        raise KedaProtoUnavailableError(f"{messages_file}: expected one {_DEFAULT_POOL} to make the pool private")
    messages_file.write_text(source.replace(_DEFAULT_POOL, _PRIVATE_POOL))

    messages = _load("externalscaler_pb2", messages_file)
    # The gRPC stubs import their messages by this top-level name; lend it only while loading.
    previous = sys.modules.get("externalscaler_pb2")
    sys.modules["externalscaler_pb2"] = messages
    try:
        services = _load("keda_externalscaler_pb2_grpc", out_dir / "externalscaler_pb2_grpc.py")
    finally:
        if previous is None:
            del sys.modules["externalscaler_pb2"]
        else:
            sys.modules["externalscaler_pb2"] = previous
    return KedaStubs(version=version, proto_file=proto, messages=messages, services=services)


def keda_stubs(out_dir: Path, version: str = KEDA_VERSION) -> KedaStubs:
    return compile_keda_stubs(download_keda_module(version), out_dir, version)
