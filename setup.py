"""Build hook: generate the gRPC code from protos/ before packaging.

Everything else about the package is declared in pyproject.toml. The generated code is
never committed, so `pip install .` (and the Dockerfile) produce it here; this needs
grpcio-tools among the build requirements.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithProtos(build_py):  # type: ignore[misc]  # setuptools is untyped here
    def run(self) -> None:
        sys.path.insert(0, str(ROOT))
        try:
            from autoscaler import protogen  # noqa: PLC0415  (importable only from the source tree)
        finally:
            sys.path.remove(str(ROOT))
        protogen.generate(ROOT)
        # Package discovery ran before the code existed in a fresh checkout.
        if protogen.GENERATED_PACKAGE not in self.packages:
            self.packages.append(protogen.GENERATED_PACKAGE)
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
