"""Fixtures for the adapter unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.adapters.scripted_server import ScriptedServer


@pytest.fixture
async def scripted_server() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    await server.start()
    yield server
    await server.stop()
