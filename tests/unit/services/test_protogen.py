"""Generated code is reproducible and importable as a package module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autoscaler import protogen


def generate_copy(root: Path) -> dict[str, bytes]:
    shutil.copytree(protogen.proto_dir(), root / "protos")
    return {path.name: path.read_bytes() for path in protogen.generate(root)}


def test_generation_is_reproducible(tmp_path: Path) -> None:
    first = generate_copy(tmp_path / "one")
    second = generate_copy(tmp_path / "two")
    assert first == second
    assert set(first) == {*protogen.GENERATED_MODULES, "__init__.py"}


def test_the_grpc_module_imports_its_messages_from_the_package(tmp_path: Path) -> None:
    generated = generate_copy(tmp_path)
    grpc_module = generated["externalscaler_pb2_grpc.py"].decode()
    assert "from autoscaler._generated import externalscaler_pb2" in grpc_module
    assert "\nimport externalscaler_pb2" not in grpc_module


def test_the_checked_out_code_is_current() -> None:
    protogen.ensure_generated()
    from autoscaler._generated import externalscaler_pb2  # noqa: PLC0415  (after ensure_generated)

    assert externalscaler_pb2.DESCRIPTOR.package == "externalscaler"
    assert [method.name for method in externalscaler_pb2.DESCRIPTOR.services_by_name["ExternalScaler"].methods] == [
        "IsActive",
        "StreamIsActive",
        "GetMetricSpec",
        "GetMetrics",
    ]


def test_missing_code_without_grpc_tools_says_how_to_generate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protogen, "_importable", lambda _module: False)
    with pytest.raises(protogen.GeneratedCodeMissingError, match=r"python -m autoscaler\.protogen"):
        protogen.ensure_generated()
