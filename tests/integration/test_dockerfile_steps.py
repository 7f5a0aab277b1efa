"""The Dockerfile's builder stage, run without Docker.

The same steps on the same inputs: the build context is recreated from the builder's
COPY lines minus .dockerignore (so it has no generated code), the wheel is built from it
(setup.py's hook must generate the gRPC code), and the wheel is installed into a fresh
`venv --without-pip` with the host interpreter's pip `--python`, as in the image. Then
the installed console script runs and the generated module imports from the venv.

Offline by design (tests reach loopback only): the build runs without isolation in this
environment, which holds the build requirements, and the installed wheel finds its
runtime dependencies through a .pth line pointing at this environment's site-packages,
placed after the venv's own directory so that nothing shadows the wheel.

What offline cannot reproduce is what the image's online resolution picks, so three
checks pin that down instead: this environment satisfies every requirement of the
built wheel (the image installs versions in the same ranges as the tested ones); the
protobuf runtime the wheel allows is never older than the generated code's gencode
version (protobuf refuses to import it otherwise); and build-system.requires names, and
bounds, the grpcio-tools that generates it, since Docker's isolated build installs
only what is listed there.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.unit.deploy.deploy_files import DOCKERFILE, DOCKERIGNORE, REPO_ROOT
from tests.unit.deploy.dockerfile import builder_copy_sources, copy_context, dockerignore_exclusions, parse_dockerfile

GENERATED = ("externalscaler_pb2.py", "externalscaler_pb2_grpc.py")
_GENCODE = re.compile(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+)")

# The interpreter this environment was made from: the image's /usr/local/bin/python.
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"

pytestmark = pytest.mark.timeout(600)


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=540, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(venv, wheel) after the builder stage's steps."""
    work = tmp_path_factory.mktemp("dockerfile-builder")
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTHONHOME"}}
    env |= {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}

    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    context = work / "context"
    copy_context(REPO_ROOT, builder_copy_sources(stages[0]), dockerignore_exclusions(DOCKERIGNORE.read_text()), context)
    assert not (context / "autoscaler" / "_generated").exists(), "generated code leaked into the build context"

    venv = work / "venv"
    _run([BASE_PYTHON, "-m", "venv", "--without-pip", venv], cwd=work, env=env)
    venv_python = venv / "bin" / "python"
    venv_site = Path(
        _run(
            [venv_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=work, env=env
        ).stdout.strip()
    )
    (venv_site / "zz_runtime_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    wheels = work / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", wheels, context],
        cwd=work,
        env=env,
    )
    (wheel,) = wheels.glob("*.whl")
    _run([sys.executable, "-m", "pip", "--python", venv_python, "install", "--no-deps", wheel], cwd=work, env=env)
    return venv, wheel


def test_wheel_carries_the_generated_grpc_code(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in GENERATED:
        assert f"autoscaler/_generated/{module}" in names, sorted(names)


def test_installed_console_script_runs(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, _ = installed
    result = subprocess.run(
        [str(venv / "bin" / "autoscaler"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout


def test_generated_module_imports_from_the_installed_wheel(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, _ = installed
    probe = "import autoscaler._generated.externalscaler_pb2_grpc as m; print(m.__file__)"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(venv), result.stdout


def test_venv_has_no_installer(installed: tuple[Path, Path]) -> None:
    venv, _ = installed
    assert not list(venv.glob("lib/python*/site-packages/pip"))
    assert not (venv / "bin" / "pip").exists()


def _wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    requirements = [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]
    return [req for req in requirements if req.marker is None or req.marker.evaluate({"extra": ""})]


def _lowest_allowed(specifier: SpecifierSet) -> Version | None:
    bounds = [Version(spec.version) for spec in specifier if spec.operator in (">=", "==", "~=", ">")]
    return max(bounds, default=None)


def test_tested_environment_satisfies_the_wheels_requirements(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    mismatches = []
    for requirement in _wheel_requirements(wheel):
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            mismatches.append(f"{requirement}: not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            mismatches.append(f"{requirement}: tested with {version}")
    assert not mismatches, "the image would install other versions than the tests ran with:\n" + "\n".join(mismatches)


def test_protobuf_runtime_is_never_older_than_the_gencode(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    with zipfile.ZipFile(wheel) as archive:
        generated = archive.read("autoscaler/_generated/externalscaler_pb2.py").decode()
    match = _GENCODE.search(generated)
    assert match, "the generated module records no gencode version"
    gencode = Version(".".join(match.groups()))
    (protobuf,) = [req for req in _wheel_requirements(wheel) if canonicalize_name(req.name) == "protobuf"]
    lowest = _lowest_allowed(protobuf.specifier)
    assert lowest is not None and lowest >= gencode, (
        f"generated code needs protobuf >= {gencode}, but the wheel allows {protobuf.specifier}"
    )


def test_isolated_build_pins_the_code_generator() -> None:
    """Docker's `pip wheel .` builds in isolation: only build-system.requires is installed."""
    requires = [
        Requirement(text)
        for text in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    ]
    by_name = {canonicalize_name(requirement.name): requirement for requirement in requires}
    assert {"setuptools", "grpcio-tools"} <= set(by_name), f"build-system.requires = {requires}"
    generator = by_name[canonicalize_name("grpcio-tools")]
    # Without an upper bound an isolated build takes the newest generator, whose gencode
    # may need a protobuf runtime newer than the wheel allows.
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in generator.specifier), str(generator)
    tested = importlib.metadata.version("grpcio-tools")
    assert generator.specifier.contains(tested), f"{generator}: the tests generated code with {tested}"
