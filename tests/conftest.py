"""Fixtures shared by the test modules: the session's Redis, clients on it, the HTTP API client.

A module that runs the app over HTTP defines ``base_url`` (where its app listens) and gets ``api``
from here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

import agentstream_examples.travel_planner as travel_planner_module
from agentstream.config import Settings, get_settings

from .api_client import Api
from .redis_server import running_redis_server
from .standins import TODAY


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    with running_redis_server() as port:
        yield port


@pytest.fixture
def redis_store(redis_port: int) -> Iterator[redis.Redis]:
    """A client on the session's Redis that leaves its data alone (a running app keeps state)."""
    with redis.Redis(port=redis_port, decode_responses=True) as client:
        yield client


@pytest.fixture
def redis_client(redis_store: redis.Redis) -> redis.Redis:
    """A client on the session's Redis, emptied first, with small stream nodes (trims bite soon)."""
    redis_store.flushall()
    redis_store.config_set("stream-node-max-entries", 100)
    return redis_store


@pytest_asyncio.fixture
async def aclient(redis_port: int, redis_client: redis.Redis) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on the emptied session Redis."""
    client = aioredis.Redis(port=redis_port, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_port: int) -> Settings:
    return Settings.from_env({"REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}"})


@pytest.fixture
def api(base_url: str) -> Iterator[Api]:
    """The HTTP API of the app the module runs at ``base_url``."""
    client = Api(base_url)
    yield client
    client.http.close()


_APP_PREFIXES = ("AZURE_", "OPENAI_", "TICKETMASTER_", "OPEN_METEO_", "TOOL_", "MODEL_")


@pytest.fixture
def use_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], Settings]]:
    """Make ``env`` the process's app settings (and the travel planner's today ``TODAY``)."""
    monkeypatch.setattr(travel_planner_module, "today", lambda: TODAY)

    def use(env: dict[str, str]) -> Settings:
        for name in [n for n in os.environ if n.startswith(_APP_PREFIXES)]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return get_settings()

    yield use
    get_settings.cache_clear()
