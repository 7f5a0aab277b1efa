"""KEDA's CustomResourceDefinitions, taken from the KEDA Go module at test time.

`go mod download -json github.com/kedacore/keda/v2@<KEDA_VERSION>` fetches the module
(through the Go module proxy, verified against its checksum database) into the
harness's module cache under ${PA_CACHE_DIR}, so a second run reads it from disk. The
CRDs are the module's `config/crd/bases/*.yaml`, the same files KEDA's release
manifests are built from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.harness.cluster import HarnessError, cache_dir, load_versions

KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = load_versions()["KEDA_VERSION"]
CRD_DIR_IN_MODULE = Path("config") / "crd" / "bases"


class KedaCrdError(HarnessError):
    """The KEDA module could not be fetched, or its CRDs could not be installed."""


def _go() -> str:
    for candidate in (os.environ.get("GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise KedaCrdError("no Go toolchain found (set GO=/path/to/go or put go on PATH)")


def keda_module_dir(version: str = KEDA_VERSION, *, timeout_s: float = 300.0) -> Path:
    """Download (or find in the module cache) the KEDA module; return its source directory."""
    env = dict(os.environ)
    env |= {
        "GOMODCACHE": os.environ.get("PA_GOMODCACHE", str(cache_dir() / "go" / "mod")),
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "",
    }
    scratch = cache_dir() / "work" / "keda-crds"
    scratch.mkdir(parents=True, exist_ok=True)  # outside any go.mod, so no module context applies
    try:
        result = subprocess.run(
            [_go(), "mod", "download", "-json", f"{KEDA_MODULE}@{version}"],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise KedaCrdError(f"go mod download {KEDA_MODULE}@{version} took over {timeout_s:.0f}s") from exc
    try:
        info: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {}
    if result.returncode != 0 or "Dir" not in info:
        detail = info.get("Error") or result.stderr.strip() or result.stdout.strip()
        raise KedaCrdError(f"go mod download {KEDA_MODULE}@{version} failed: {detail}")
    return Path(info["Dir"])


def crd_files(version: str = KEDA_VERSION) -> list[Path]:
    files = sorted((keda_module_dir(version) / CRD_DIR_IN_MODULE).glob("*.yaml"))
    if not files:
        raise KedaCrdError(f"{KEDA_MODULE}@{version} has no {CRD_DIR_IN_MODULE}/*.yaml")
    return files


def load_crds(version: str = KEDA_VERSION) -> list[dict[str, Any]]:
    crds: list[dict[str, Any]] = []
    for path in crd_files(version):
        crds.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return crds


def install_crds(api_client: Any, version: str = KEDA_VERSION, *, timeout_s: float = 60.0) -> list[str]:
    """Create KEDA's CRDs (replacing older copies) and wait until each is Established.

    The dynamic client sends the manifests as they are: the typed models would
    round-trip the large OpenAPI schemas through generated classes.
    """
    from kubernetes.dynamic import DynamicClient  # noqa: PLC0415 - optional dependency, imported on use
    from kubernetes.dynamic.exceptions import ConflictError  # noqa: PLC0415

    dynamic_client: Any = DynamicClient  # untyped
    definitions = dynamic_client(api_client).resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    names = []
    for crd in load_crds(version):
        name = crd["metadata"]["name"]
        try:
            definitions.create(body=crd)
        except ConflictError:
            current = definitions.get(name=name)
            metadata = {**crd["metadata"], "resourceVersion": current.metadata.resourceVersion}
            definitions.replace(body={**crd, "metadata": metadata})
        names.append(name)
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        for name in sorted(pending):
            conditions = definitions.get(name=name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise KedaCrdError(f"CRDs not Established after {timeout_s:.0f}s: {sorted(pending)}")
        if pending:
            time.sleep(0.2)
    return names
