"""The stream response at the ASGI level, against a real redis-server: what reaches ``send``.

A recording ``send`` sees every body message, so these tests check the write pattern itself: one
body per catch-up page, the events of one loop turn in one body, nothing missed or repeated, and a
client that leaves taking its reader out of the hub.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

from agentstream.api.streaming import EventStreamResponse
from agentstream.events import (
    MESSAGE_DELTA,
    RUN_COMPLETED,
    RUN_QUEUED,
    SSE,
    Event,
    stream_format,
)
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.hub import StreamHub, Subscription
from agentstream.streamlog.keys import group_tag, notice_channel, stream_key
from agentstream.streamlog.reader import CATCH_UP_PAGE, ReaderSlots, open_stream

from .streamlog_helpers import new_conversation_id
from .test_stream_hub import close_hub, expected_after, make_hub, until

FORMAT = stream_format(SSE, 1000)


@pytest_asyncio.fixture
async def hub(redis_port: int) -> AsyncIterator[StreamHub]:
    made, clients = make_hub(redis_port, connections=2)
    yield made
    await close_hub(made, clients)


def append_events(client: redis.Redis, cid: str, types: list[str], *, atomic: bool = False) -> list:
    """Entries as the append script writes them (same fields, same order, the same notice), in
    one round trip."""
    key = stream_key(cid)
    first_seq = client.xlen(key)
    with client.pipeline(transaction=atomic) as pipe:
        for offset, event_type in enumerate(types):
            seq = first_seq + offset
            data = f'{{"text":"{seq} "}}' if event_type == MESSAGE_DELTA else "{}"
            fields = {"type": event_type, "run": "r1", "seq": seq, "ts": 1, "data": data}
            pipe.xadd(key, fields)
        pipe.spublish(notice_channel(group_tag(cid)), key)  # what the script's notify() sends
        return pipe.execute()[: len(types)]


class Recorder:
    """The ASGI side: records what the response sends; the client leaves when told to."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.leave = asyncio.Event()
        self.sent = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.sent.set()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    @property
    def bodies(self) -> list[bytes]:
        """The body messages that carried bytes, after the preamble."""
        sent = [m["body"] for m in self.messages if m["type"] == "http.response.body"]
        assert sent[0] == FORMAT.preamble.encode()
        return [body for body in sent[1:] if body]

    @property
    def finished(self) -> bool:
        last = self.messages[-1]
        return last["type"] == "http.response.body" and not last["more_body"]


async def respond(
    aclient: aioredis.Redis, cid: str, cursor: str, hub: StreamHub | None, recorder: Recorder
) -> None:
    opened = await open_stream(
        aclient, cid, Cursor(cursor), keepalive_seconds=15, max_seconds=120, hub=hub
    )
    response = EventStreamResponse(opened, FORMAT, _never_idle)
    await asyncio.wait_for(response({"type": "http"}, recorder.receive, recorder.send), 60)


async def _never_idle() -> bool:
    raise AssertionError("no keep-alive tick is expected in these tests")


@pytest.mark.parametrize("with_hub", [True, False], ids=["hub", "blocking-reader"])
@pytest.mark.parametrize("behind", [1, CATCH_UP_PAGE, CATCH_UP_PAGE + 1, 2 * CATCH_UP_PAGE + 1])
async def test_catch_up_is_one_write_per_page_with_nothing_missed_or_repeated(
    redis_client: redis.Redis,
    aclient: aioredis.Redis,
    hub: StreamHub,
    with_hub: bool,
    behind: int,
) -> None:
    cid = new_conversation_id()
    # A finished run, then the next run's first event: the response stops at the terminal event
    # even where it is in the middle of a page.
    types = [RUN_QUEUED] + [MESSAGE_DELTA] * (2 * CATCH_UP_PAGE) + [RUN_COMPLETED, RUN_QUEUED]
    ids = append_events(redis_client, cid, types)
    terminal = len(types) - 2
    cursor = ids[terminal - behind]
    recorder = Recorder()

    await respond(aclient, cid, cursor, hub if with_hub else None, recorder)

    expected = expected_after(redis_client, cid, cursor)[:behind]
    assert expected[-1].type == RUN_COMPLETED
    assert b"".join(recorder.bodies) == b"".join(e.frame(SSE) for e in expected)
    assert len(recorder.bodies) == math.ceil(behind / CATCH_UP_PAGE)
    assert recorder.finished
    assert hub.reader_count() == 0


async def test_events_of_one_loop_turn_reach_a_live_reader_in_one_write(
    redis_client: redis.Redis, aclient: aioredis.Redis, hub: StreamHub
) -> None:
    cid = new_conversation_id()
    (start,) = append_events(redis_client, cid, [RUN_QUEUED])
    recorder = Recorder()
    responding = asyncio.create_task(respond(aclient, cid, "0-0", hub, recorder))
    await until(lambda: hub.reader_count() == 1)
    await until(lambda: hub.connection_count() >= 1)
    # One transaction: the hub's read after its notice returns the three entries in one reply,
    # handed to the reader in one loop turn.
    append_events(redis_client, cid, [MESSAGE_DELTA] * 3, atomic=True)
    await until(lambda: len(recorder.bodies) == 2)
    append_events(redis_client, cid, [RUN_COMPLETED])
    await responding

    events = expected_after(redis_client, cid, "0-0")
    frames = [e.frame(SSE) for e in events]
    assert recorder.bodies == [frames[0], b"".join(frames[1:4]), frames[4]]
    assert events[0].id == start
    assert recorder.finished


async def test_a_client_that_leaves_takes_its_reader_out_of_the_hub_and_frees_its_slot(
    redis_client: redis.Redis, aclient: aioredis.Redis, hub: StreamHub
) -> None:
    cid = new_conversation_id()
    append_events(redis_client, cid, [RUN_QUEUED])
    slots = ReaderSlots(1)
    opened = await open_stream(
        aclient, cid, Cursor("0-0"), keepalive_seconds=15, max_seconds=120, hub=hub, slots=slots
    )
    recorder = Recorder()
    response = EventStreamResponse(opened, FORMAT, _never_idle)
    responding = asyncio.create_task(response({"type": "http"}, recorder.receive, recorder.send))
    await until(lambda: hub.reader_count() == 1)
    recorder.leave.set()
    await asyncio.wait_for(responding, 30)

    assert hub.reader_count() == 0
    assert slots.in_use == 0
    assert not recorder.finished  # nothing is sent to a client that has gone


async def test_a_wait_after_an_event_ends_at_its_own_timeout_not_an_earlier_waits() -> None:
    subscription = Subscription("stream", limit=10)
    waiting = asyncio.create_task(subscription.take(600))
    await asyncio.sleep(0)  # the task is now waiting, its ten-minute timer armed
    subscription.offer(Event("1-1", MESSAGE_DELTA, "r1", 1, 1, {"text": "a"}))
    assert len(await asyncio.wait_for(waiting, 5)) == 1
    # The timer armed for the ten-minute wait must not stand in for this short one.
    assert await asyncio.wait_for(subscription.take(0.01), 5) == []
    subscription.end("left")
    assert await asyncio.wait_for(subscription.take(600), 5) == []
