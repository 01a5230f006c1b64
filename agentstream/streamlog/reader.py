"""The asynchronous stream reader the HTTP stream function uses.

:func:`open_stream` checks everything that decides the response status *before* the response
starts (unknown conversation, nothing to deliver, trimmed history); :meth:`OpenStream.items` then
yields events strictly after the cursor: non-blocking ``XREAD COUNT n`` while catching up, then
``XREAD BLOCK`` on the last id (never sleep-and-poll), a keep-alive tick whenever a block times
out, and stops after the first terminal event or at the maximum duration.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from ..events import TERMINAL_TYPES, Event
from .cursor import Cursor
from .keys import meta_key, parse_stream_id, stream_id_before, stream_key

KEEPALIVE = None  # what items() yields when the stream stayed idle for a keep-alive interval


class ConversationNotFound(Exception):
    """No stream for this conversation: it never existed or its TTL ran out."""


class NothingToDeliver(Exception):
    """Nothing after the cursor and no run in progress."""


class CursorTrimmed(Exception):
    """Events after the cursor were trimmed away by the MAXLEN cap."""


@dataclass
class OpenStream:
    client: aioredis.Redis
    key: str
    after_id: str
    batch_size: int
    keepalive_seconds: float
    max_seconds: float
    clock: Callable[[], float] = time.monotonic

    async def items(self) -> AsyncIterator[Event | None]:
        """Events after the cursor, with ``KEEPALIVE`` (None) ticks while idle."""
        deadline = self.clock() + self.max_seconds
        last_id = self.after_id
        caught_up = False
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            block_ms = None
            if caught_up:
                block_ms = max(1, int(min(self.keepalive_seconds, remaining) * 1000))
            reply = await self.client.xread(
                {self.key: last_id}, count=self.batch_size, block=block_ms
            )
            entries = reply[0][1] if reply else []
            if not entries:
                if caught_up:
                    yield KEEPALIVE
                caught_up = True
                continue
            # A full batch means there may be more waiting: keep reading without blocking.
            caught_up = len(entries) < self.batch_size
            for entry_id, fields in entries:
                event = Event.from_entry(entry_id, fields)
                last_id = event.id
                yield event
                if event.is_terminal:
                    return


async def open_stream(
    client: aioredis.Redis,
    conversation_id: str,
    cursor: Cursor,
    *,
    keepalive_seconds: float,
    max_seconds: float,
    batch_size: int = 100,
) -> OpenStream:
    """Decide where reading starts, or raise why there is nothing to stream.

    One round trip (a ``MULTI`` pipeline) reads the first and last entries and the meta fields.
    """
    skey, mkey = stream_key(conversation_id), meta_key(conversation_id)
    async with client.pipeline(transaction=True) as pipe:
        pipe.xrange(skey, count=1)
        pipe.xrevrange(skey, count=1)
        pipe.hmget(mkey, "latest_start", "first_id")
        first, last, (latest_start, first_id) = await pipe.execute()
    if not first:
        raise ConversationNotFound(conversation_id)
    first_entry_id = first[0][0]
    last_event = Event.from_entry(*last[0])

    if cursor.is_latest_run:
        after_id = stream_id_before(latest_start) if latest_start else "0-0"
    else:
        after_id = cursor.value or "0-0"

    trimmed = first_id is not None and first_entry_id != first_id
    if trimmed and _before(after_id, stream_id_before(first_entry_id)):
        # Everything older than the first entry is gone, and the cursor is older than that.
        raise CursorTrimmed(conversation_id)
    if not _before(after_id, last_event.id) and last_event.type in TERMINAL_TYPES:
        raise NothingToDeliver(conversation_id)
    return OpenStream(
        client=client,
        key=skey,
        after_id=after_id,
        batch_size=batch_size,
        keepalive_seconds=keepalive_seconds,
        max_seconds=max_seconds,
    )


def _before(a: str, b: str) -> bool:
    """Stream id ``a`` sorts strictly before ``b``."""
    pa, pb = parse_stream_id(a), parse_stream_id(b)
    assert pa is not None and pb is not None
    return pa < pb
