"""The web page in headless Chromium (Debian's `chromium`): the chart renders with data.

Chromium loads the page from a real server on loopback, runs our script (which fetches
the JSON API), then dumps the DOM and takes a screenshot. The screenshots are left in
artifacts/browser/ (git-ignored) for a person to look at:

- target-page.png: one target of the in-process app with the fake engine;
- served-target-page.png: the whole page of a target the daemon's pipeline planned in the
  closed-loop simulator: derived demand beside its raw signals, observed beside planned replicas;
- demo-target-page.png: the first target of `autoscaler demo`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import struct
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autoscaler.domain.snapshot import TargetSnapshot, TargetStatus
from tests.integration.http_fixtures import serve_trace_targets
from tests.unit.services.test_http_api import TRACE_METADATA, served_target, trace_target

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--window-size=1280,1000",
    # Virtual time runs the page's fetches and timers to completion before the dump.
    "--virtual-time-budget=6000",
)
DEMO_STARTUP_SECONDS = 90


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is required: apt-get install -y chromium")
    return path


class ElementsById(HTMLParser):
    """Attributes of every element with an id, every tag name, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: dict[str, dict[str, str]] = {}
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        attributes = {name: value or "" for name, value in attrs}
        if "id" in attributes:
            self.elements[attributes["id"]] = {"tag": tag, **attributes}

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def run_chromium(url: str, profile: Path, *action: str) -> tuple[str, str]:
    process = await asyncio.create_subprocess_exec(
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *action,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    return stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def load_page(url: str, profile: Path) -> ElementsById:
    dom, log = await run_chromium(url, profile, "--dump-dom")
    script_errors = [line for line in log.splitlines() if "Uncaught" in line or "Refused to" in line]
    assert not script_errors, script_errors
    page = ElementsById()
    page.feed(dom)
    return page


async def screenshot(url: str, profile: Path, name: str, *, height: int = 1000) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    # The last --window-size given wins over the one in CHROMIUM_FLAGS.
    await run_chromium(url, profile, f"--window-size=1280,{height}", f"--screenshot={path}")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    size = struct.unpack(">II", data[16:24])
    assert size == (1280, height)
    assert len(data) > 30_000, "the screenshot is nearly blank"
    return path


def assert_chart_rendered(page: ElementsById, *, history_points: int | None = None) -> None:
    assert page.elements["app"]["data-state"] == "ready", " ".join(page.text)[-500:]
    chart = page.elements["target-chart"]
    assert chart["tag"] == "svg"
    assert int(chart["data-rendered"]) > 0
    assert int(chart["data-forecast-steps"]) > 0
    drawn = int(chart["data-history-points"])
    assert drawn > 0 if history_points is None else drawn == history_points
    assert page.elements["reason"]["tag"] == "p"
    assert all(text.strip() not in {"null", "undefined", "NaN"} for text in page.text)


@pytest.fixture
def chat() -> TargetSnapshot:
    return trace_target()


@pytest.fixture
def warming() -> TargetSnapshot:
    """Registered, with history, but no forecast or decision yet; its query holds markup."""
    target = trace_target(name="warming", metadata={**TRACE_METADATA, "query": 'up{job="<b>x</b>"}'})
    return replace(target, status=TargetStatus.WARMING, decision=None, forecast=None, forecast_start=None)


@pytest.fixture
def served() -> TargetSnapshot:
    return served_target()


@pytest.fixture
async def base_url(chat: TargetSnapshot, warming: TargetSnapshot, served: TargetSnapshot) -> AsyncIterator[str]:
    async with serve_trace_targets(chat, warming, served) as url:
        yield url


@pytest.mark.timeout(180)
async def test_target_page_draws_history_forecast_and_plan(base_url: str, chat: TargetSnapshot, tmp_path: Path) -> None:
    key = chat.key
    url = f"{base_url}/targets/{key.namespace}/{key.name}/{key.metadata_digest}"
    page = await load_page(url, tmp_path / "profile")
    # The chart shows five forecast horizons of history by default.
    assert chat.forecast is not None
    assert_chart_rendered(page, history_points=max(90, 5 * chat.forecast.horizon))
    assert chat.decision is not None and chat.decision.reason in " ".join(page.text)
    # Its query measures arrivals, so demand is that raw series itself; no replica source is set.
    demand = page.elements["demand-chart"]
    assert (demand["data-panels"], demand["data-signals"]) == ("2", "arrivals")
    assert page.elements["replica-chart"]["data-rendered"] == "0"
    assert "No replica counts observed yet (replicaSource none)" in " ".join(page.text)
    shot = await screenshot(url, tmp_path / "profile", "target-page.png")
    assert shot.exists()


@pytest.mark.timeout(180)
async def test_target_page_draws_demand_beside_signals_and_observed_replicas(
    base_url: str, served: TargetSnapshot, tmp_path: Path
) -> None:
    key = served.key
    # The whole simulated run, with the steps where the replicas fell behind and a queue formed.
    url = f"{base_url}/targets/{key.namespace}/{key.name}/{key.metadata_digest}?points=400"
    page = await load_page(url, tmp_path / "profile")
    assert_chart_rendered(page, history_points=served.history_values.size)
    demand = page.elements["demand-chart"]
    # Demand (with completions drawn over it, same unit), then completions and waiting alone.
    assert (demand["data-panels"], demand["data-signals"]) == ("3", "completions,waiting")
    assert int(demand["data-rendered"]) == 4 * served.history_values.size  # demand, completions twice, waiting
    replicas = page.elements["replica-chart"]
    decision, derivation = served.decision, served.demand_derivation
    assert decision is not None and derivation is not None
    assert replicas["data-planned"] == str(decision.replicas)
    assert served.replica_history is not None
    observed = served.replica_history.ready.size
    assert int(replicas["data-ready-points"]) == int(replicas["data-desired-points"]) == observed
    text = " ".join(page.text)
    assert derivation.description in text
    assert f"Planned {decision.replicas}: {decision.reason}" in text
    assert "ready (observed)" in text and "desired (observed)" in text
    await screenshot(url, tmp_path / "profile", "served-target-page.png", height=2000)


@pytest.mark.timeout(180)
async def test_points_parameter_widens_the_history(base_url: str, chat: TargetSnapshot, tmp_path: Path) -> None:
    key = chat.key
    url = f"{base_url}/targets/{key.namespace}/{key.name}/{key.metadata_digest}?points=300"
    assert_chart_rendered(await load_page(url, tmp_path / "profile"), history_points=300)


@pytest.mark.timeout(180)
async def test_list_page_links_every_target(base_url: str, tmp_path: Path) -> None:
    page = await load_page(f"{base_url}/", tmp_path / "profile")
    assert page.elements["app"]["data-state"] == "ready"
    assert page.elements["target-table"]["data-rendered"] == "5"
    await screenshot(f"{base_url}/", tmp_path / "profile", "target-list.png")


@pytest.mark.timeout(180)
async def test_target_without_forecast_draws_its_history(
    base_url: str, warming: TargetSnapshot, tmp_path: Path
) -> None:
    key = warming.key
    page = await load_page(f"{base_url}/targets/{key.namespace}/{key.name}/{key.metadata_digest}", tmp_path / "p")
    assert page.elements["app"]["data-state"] == "ready"
    chart = page.elements["target-chart"]
    assert int(chart["data-history-points"]) == 90 and chart["data-forecast-steps"] == "0"
    text = " ".join(page.text)
    assert "No decision yet." in text
    assert 'up{job="<b>x</b>"}' in text  # shown as text, never parsed as markup
    assert "b" not in page.tags


@pytest.mark.timeout(180)
async def test_unknown_target_shows_the_api_error(base_url: str, tmp_path: Path) -> None:
    page = await load_page(f"{base_url}/targets/llm/chat/ffffffffffffffff", tmp_path / "profile")
    assert page.elements["app"]["data-state"] == "error"
    assert "no target llm/chat/ffffffffffffffff" in " ".join(page.text)


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, object] = json.load(response)
        return body


async def _ready_demo_target(http_url: str, deadline: float) -> str:
    """Poll the demo's API until a target has a forecast; return its page path."""
    while time.monotonic() < deadline:
        listing = await asyncio.to_thread(_get_json, f"{http_url}api/v1/targets")
        for target in listing["targets"]:  # type: ignore[attr-defined]
            if target["status"] == "ready":
                detail = await asyncio.to_thread(_get_json, f"{http_url}{target['api_url'].lstrip('/')}")
                if detail["forecast"] is not None:
                    return str(target["page_url"])
        await asyncio.sleep(1.0)
    raise AssertionError(f"no demo target became ready with a forecast within {DEMO_STARTUP_SECONDS}s")


@pytest.mark.timeout(240)
async def test_demo_page_renders(tmp_path: Path) -> None:
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "autoscaler",
        "demo",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--speed",
        "600",
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + DEMO_STARTUP_SECONDS
        http_url = ""
        while not http_url:
            line = (await asyncio.wait_for(demo.stdout.readline(), max(1.0, deadline - time.monotonic()))).decode()
            if not line:
                assert demo.stderr is not None
                pytest.fail(f"demo exited: {(await demo.stderr.read()).decode(errors='replace')[-3000:]}")
            if match := re.match(r"HTTP\s+(http://\S+/)", line):
                http_url = match.group(1)
        page_path = await _ready_demo_target(http_url, deadline)
        url = f"{http_url.rstrip('/')}{page_path}"
        assert_chart_rendered(await load_page(url, tmp_path / "profile"))
        await screenshot(url, tmp_path / "profile", "demo-target-page.png")
    finally:
        demo.terminate()
        try:
            await asyncio.wait_for(demo.wait(), timeout=15)
        except TimeoutError:
            demo.kill()
            await demo.wait()
