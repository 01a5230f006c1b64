from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import redis

import agentstream_examples.travel_planner as travel_planner_module
from agentstream.config import Settings, get_settings

from .redis_server import running_redis_server
from .standins import TODAY


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    with running_redis_server() as port:
        yield port


@pytest.fixture
def redis_client(redis_port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_port, decode_responses=True)
    client.flushall()
    client.config_set("stream-node-max-entries", 100)
    yield client
    client.close()


@pytest.fixture
def settings(redis_port: int) -> Settings:
    return Settings.from_env({"REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}"})


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
