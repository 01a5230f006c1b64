"""``/api/health`` tells a worker that is merely at capacity (busy, 200) from one that is down."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request

from agentstream.api import handlers
from agentstream.config import Settings
from agentstream.redis_clients import async_redis
from agentstream.streamlog.reader import reader_slots

from .redis_server import free_port


async def get_health() -> tuple[int, dict[str, Any]]:
    scope = {"type": "http", "method": "GET", "path": "/api/health", "headers": []}
    response = await handlers.health(Request(scope))
    return response.status_code, json.loads(bytes(response.body))


async def test_every_request_connection_in_use_is_busy_not_down(
    use_settings: Callable[[dict[str, str]], Settings], redis_port: int
) -> None:
    settings = use_settings(
        {
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "REDIS_MAX_CONNECTIONS": "1",
            "REDIS_POOL_TIMEOUT_SECONDS": "0.2",
        }
    )
    client = async_redis(settings)
    taken = await client.connection_pool.get_connection()  # the worker's only one
    try:
        status, body = await get_health()
    finally:
        await client.connection_pool.release(taken)
    assert (status, body["status"], body["redis"]) == (200, "busy", "busy")
    assert await get_health() == (200, {**body, "status": "ok", "redis": "ok"})
    await client.aclose()


async def test_every_stream_slot_in_use_is_busy(
    use_settings: Callable[[dict[str, str]], Settings], redis_port: int
) -> None:
    settings = use_settings({"REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}"})
    slots = reader_slots(settings.pools.max_readers)
    releases = [slots.acquire() for _ in range(slots.limit - slots.in_use)]
    try:
        status, body = await get_health()
    finally:
        for release in releases:
            release()
    assert (status, body["status"], body["redis"]) == (200, "busy", "ok")
    await async_redis(settings).aclose()


async def test_redis_that_does_not_answer_is_down(
    use_settings: Callable[[dict[str, str]], Settings],
) -> None:
    # A plain Redis by setting: no topology probe, only the health check's own ping.
    settings = use_settings(
        {"REDIS_CONNECTION_STRING": f"127.0.0.1:{free_port()}", "REDIS_CLUSTER": "false"}
    )
    status, body = await get_health()
    assert (status, body["status"]) == (503, "unhealthy")
    assert body["redis"].startswith("unreachable (")
    await async_redis(settings).connection_pool.disconnect()  # it never connected
