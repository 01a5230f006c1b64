from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from agentstream.config import Settings

from .redis_server import running_redis_server


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
