"""A live reader that is behind when its conversation is deleted still ends with run.cancelled.

Deleting ends the active run with ``run.cancelled`` and then removes the keys. A reader blocked on
the stream gets the event before the keys go; a reader that was busy sending its previous batch
(or a hub reader whose notice had not been read yet) reads next from a stream that is gone. The
deleted mark keeps the event for it; events it had not read are gone with the conversation.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from agentstream.api.streaming import EventStreamResponse
from agentstream.events import MESSAGE_DELTA, NDJSON, RUN_CANCELLED, RUN_STARTED, stream_format
from agentstream.streamlog import control
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.keys import conversation_keys, parse_stream_id
from agentstream.streamlog.reader import open_stream

from .streamlog_helpers import new_conversation_id, run_log

LIMITS = control.Limits(ttl_seconds=600, maxlen=10_000)


@pytest.mark.parametrize("unread", [0, 2], ids=["caught-up", "further-behind"])
async def test_a_reader_busy_when_the_stream_went_gets_the_deletes_run_cancelled(
    redis_client: redis.Redis, redis_port: int, unread: int
) -> None:
    cid, run_id = new_conversation_id(), uuid.uuid4().hex
    async with aioredis.Redis(port=redis_port, decode_responses=True) as client:
        await control.start_run(
            client,
            cid,
            run_id,
            "Plan 2 days",
            idempotency_key=None,
            must_exist=False,
            limits=LIMITS,
        )
        log = run_log(redis_client, cid, run_id)
        started = log.append(RUN_STARTED, {"attempt": 1})
        delta = log.append(MESSAGE_DELTA, {"text": "Day 1"})

        sent: list[bytes] = []
        in_send, go_on, never = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            body = message.get("body", b"")
            if b'"seq":2' in body:  # the delta: the reader is busy while the stream goes
                in_send.set()
                await go_on.wait()
            sent.append(body)

        async def receive() -> dict[str, Any]:
            await never.wait()  # the client stays
            return {"type": "http.disconnect"}

        opened = await open_stream(
            client, cid, Cursor(started.id), keepalive_seconds=1, max_seconds=10
        )
        response = EventStreamResponse(
            opened,
            stream_format(NDJSON, 3000),
            functools.partial(control.end_stale_run, client, cid, LIMITS),
            on_gone=functools.partial(control.deletion_event, client, cid),
        )
        serving = asyncio.create_task(response({"type": "http"}, receive, send))
        await in_send.wait()
        for n in range(unread):  # written while the reader was busy: gone with the conversation
            log.append(MESSAGE_DELTA, {"text": f" more {n}"})
        assert await control.delete_conversation(client, cid, LIMITS)
        assert redis_client.exists(*conversation_keys(cid)) == 0
        go_on.set()
        await serving

    lines = [json.loads(line) for line in b"".join(sent).splitlines() if line.strip()]
    assert [(line["type"], line["id"], line["seq"]) for line in lines] == [
        (MESSAGE_DELTA, delta.id, 2),
        (RUN_CANCELLED, lines[-1]["id"], 3 + unread),
    ]
    assert parse_stream_id(lines[-1]["id"]) > parse_stream_id(delta.id)
    assert lines[-1]["run"] == run_id
    assert response.end_reason == "terminal"
