"""Small helpers shared by the stream-log tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import redis
import redis.asyncio as aioredis

from agentstream.events import RUN_QUEUED, Event
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.reader import open_stream
from agentstream.streamlog.runlog import RunLog
from agentstream.streamlog.writer import StreamWriter


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def run_log(client: redis.Redis, cid: str, run_id: str, **overrides: int) -> RunLog:
    return RunLog(
        client,
        cid,
        run_id,
        ttl_seconds=overrides.get("ttl_seconds", 600),
        maxlen=overrides.get("maxlen", 10_000),
    )


def queued_run_log(client: redis.Redis, cid: str, run_id: str, **overrides: int) -> RunLog:
    """A run log whose run exists (``run.queued`` written), as the HTTP side leaves it."""
    log = run_log(client, cid, run_id, **overrides)
    log.append(RUN_QUEUED, {"message": "hi"})
    return log


def stream_writer(log: RunLog, flush_chars: int = 64, flush_ms: int = 25) -> StreamWriter:
    return StreamWriter(log, flush_chars=flush_chars, flush_ms=flush_ms)


async def collect(
    client: aioredis.Redis,
    cid: str,
    cursor: Cursor,
    *,
    keepalive_seconds: float = 15.0,
    max_seconds: float = 30.0,
    batch_size: int = 100,
) -> list[Event]:
    opened = await open_stream(
        client,
        cid,
        cursor,
        keepalive_seconds=keepalive_seconds,
        max_seconds=max_seconds,
        batch_size=batch_size,
    )
    return [item async for item in _events_only(opened.items())]


async def _events_only(items: AsyncIterator[Event | None]) -> AsyncIterator[Event]:
    async for item in items:
        if item is not None:
            yield item
