"""The served OpenAPI document is valid, and schemathesis finds no failure against the live API.

The app runs on loopback in this process with a fake engine holding real-trace targets;
the schemathesis CLI (from PyPI) runs as a subprocess against it with every check on.
A second run pins the path to an existing target, so the 200 answers of the detail
endpoint are checked against their schema while `points` is fuzzed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from autoscaler.adapters.kube_auth import Identity
from autoscaler.domain.snapshot import TargetSnapshot
from autoscaler.services.authn import Authenticator
from autoscaler.services.openapi import openapi_document
from tests.integration.http_fixtures import serve_trace_targets
from tests.unit.services.test_http_api import trace_target

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "schemathesis"


@pytest.fixture
def chat() -> TargetSnapshot:
    return trace_target()


@pytest.fixture
async def base_url(chat: TargetSnapshot) -> AsyncIterator[str]:
    async with serve_trace_targets(chat) as url:
        yield url


@pytest.mark.parametrize("authenticated", [False, True])
def test_openapi_document_validates(authenticated: bool) -> None:
    validate(openapi_document(authenticated=authenticated))


async def test_served_document_describes_a_real_target(base_url: str, chat: TargetSnapshot) -> None:
    async with aiohttp.ClientSession(base_url) as session:
        async with session.get("/openapi.json") as response:
            document = await response.json()
        validate(document)
        key = chat.key
        async with session.get(f"/api/v1/targets/{key.namespace}/{key.name}/{key.metadata_digest}") as response:
            detail = await response.json()
        async with session.get("/api/v1/targets") as response:
            listing = await response.json()
    schemas = document["components"]["schemas"]
    for name, body in (("TargetDetail", detail), ("TargetList", listing)):
        validator = OAS30Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]})
        errors = [error.message for error in validator.iter_errors(body)]
        assert not errors, f"{name}: {errors[:5]}"
    assert set(schemas["TargetDetail"]["required"]) == set(detail)


async def run_schemathesis(base_url: str, report: str, *extra: str, config: Path | None = None) -> tuple[int, str]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        *(("--config-file", str(config)) if config else ()),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "40",
        "--seed",
        "4",
        "--workers",
        "1",
        "--no-color",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-junit-path",
        str(ARTIFACTS / f"{report}.xml"),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def assert_report_clean(report: str, *, operations: int) -> None:
    """The JUnit report names every operation tested and holds no failure or error."""
    suite = ElementTree.parse(ARTIFACTS / f"{report}.xml").getroot()
    totals = {name: int(suite.get(name, "0")) for name in ("tests", "failures", "errors")}
    assert totals["failures"] == totals["errors"] == 0, totals
    tested = {case.get("name") for case in suite.iter("testcase")}
    assert len({name for name in tested if name and name.startswith("GET ")}) >= operations, tested


@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_failures(base_url: str) -> None:
    code, output = await run_schemathesis(base_url, "all-operations")
    assert code == 0, output[-6000:]
    assert_report_clean("all-operations", operations=6)


@pytest.mark.timeout(300)
async def test_schemathesis_on_an_existing_target(base_url: str, chat: TargetSnapshot, tmp_path: Path) -> None:
    key = chat.key
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[parameters]\n"
        + "".join(
            f'"path.{name}" = {json.dumps(value)}\n'
            for name, value in (("namespace", key.namespace), ("name", key.name), ("digest", key.metadata_digest))
        )
    )
    code, output = await run_schemathesis(
        base_url,
        "existing-target",
        "--include-path-regex",
        "/api/v1/targets/",
        config=config,
    )
    assert code == 0, output[-6000:]
    assert_report_clean("existing-target", operations=2)


class OneTokenReviewer:
    """Accepts one token and grants its user every path: authorisation itself is tested in
    tests/unit/services/test_authn.py and tests/e2e/test_rbac.py; here the document's
    security section is held to what the server does.
    """

    def review_token(self, token: str) -> Identity | None:
        return Identity("schemathesis") if token == SCHEMATHESIS_TOKEN else None

    def review_access(self, identity: Identity, *, path: str, verb: str) -> bool:
        return True


SCHEMATHESIS_TOKEN = "schemathesis-token"


@pytest.mark.timeout(300)
async def test_schemathesis_holds_the_authenticated_document_to_the_server(chat: TargetSnapshot) -> None:
    """With authentication on, the document declares a bearer scheme; schemathesis checks
    that requests without the token are refused and that every answer matches the document.
    """
    async with serve_trace_targets(chat, authenticator=Authenticator(OneTokenReviewer())) as url:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/openapi.json") as response:
            assert response.status == 401  # the document too needs the token
        headers = ("--header", f"Authorization: Bearer {SCHEMATHESIS_TOKEN}")
        code, output = await run_schemathesis(url, "authenticated", *headers)
    assert code == 0, output[-6000:]
    assert_report_clean("authenticated", operations=6)
