"""The stream response: pre-framed events handed straight to the ASGI ``send``.

With a thousand readers, a worker's time goes to one body write per event per reader, so this
path does as little per write as it can:

- the events' frames are encoded once per event (cached on the event, shared by its readers) and
  everything a reader got in one loop turn (a live batch or a catch-up page) is joined into one
  body message: one write per reader per turn, however many events;
- the body goes to ``send`` from the loop that takes the events, not through Starlette's
  ``StreamingResponse``: no async-iterator hop per chunk and no per-response anyio task group
  around every write. A client going away is noticed by one task per response that waits on
  ``receive()``; it cancels the writing, so the reader leaves the hub at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import redis.exceptions
from fastapi import Response

from ..events import Event, StreamFormat, truncation_notice
from ..streamlog.capacity import AtCapacity
from ..streamlog.continuity import SeqContinuity
from ..streamlog.keys import parse_stream_id, stream_id_before
from ..streamlog.reader import HubStream, OpenStream

logger = logging.getLogger(__name__)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Message = MutableMapping[str, Any]  # ASGI's, as Starlette spells it
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class EventStreamResponse(Response):
    """A stream's events after the cursor, in one format, until the terminal event.

    ``on_idle`` runs on every keep-alive tick (it ends a run whose worker is gone); when it
    returns False the stream itself is gone, and the response ends with ``on_gone``'s event (the
    ``run.cancelled`` of a delete, when this reader had not read it yet). ``on_batch``
    (telemetry, when it is on) sees each batch sent. ``on_end`` runs when the response ends,
    however it ends; ``events_sent``, ``bytes_sent`` and ``end_reason`` then say what it did.
    """

    def __init__(
        self,
        opened: OpenStream | HubStream,
        fmt: StreamFormat,
        on_idle: Callable[[], Awaitable[bool]],
        on_end: Callable[[], None] = lambda: None,
        on_batch: Callable[[list[Event]], None] | None = None,
        on_gone: Callable[[], Awaitable[Event | None]] | None = None,
    ) -> None:
        # Not Response.__init__: a streamed body has no Content-Length.
        self.status_code = 200
        self.media_type = f"{fmt.media_type}; charset=utf-8"
        self.background = None
        self.init_headers(STREAM_HEADERS)
        self._opened = opened
        self._format = fmt
        self._on_idle = on_idle
        self._on_end = on_end
        self._on_batch = on_batch
        self._on_gone = on_gone
        self.events_sent = 0
        self.bytes_sent = 0
        # terminal | max_duration | gone (deleted or expired) | truncated | store_error
        # | disconnected
        self.end_reason = "max_duration"

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        loop = asyncio.get_running_loop()
        writing = loop.create_task(self._write_events(send))
        watching = loop.create_task(_until_disconnect(receive))
        try:
            await asyncio.wait((writing, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnected = watching.done()
            if disconnected:
                self.end_reason = "disconnected"
            watching.cancel()
            writing.cancel()  # no-op when it ended; else the client left: stop, leave the hub
            with contextlib.suppress(asyncio.CancelledError):
                await writing
            self._on_end()
        if not disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write_events(self, send: Send) -> None:
        media_type = self._format.media_type
        if self._format.preamble:
            await send(_body(self._format.preamble.encode()))
        keepalive = self._format.keepalive.encode()
        continuity = SeqContinuity(self._opened.cursor_event)
        try:
            # aclosing: a response that ends early (stream gone) leaves the hub at once.
            async with contextlib.aclosing(self._opened.batches()) as batches:
                async for batch in batches:
                    if batch is None:
                        if keepalive:
                            await send(_body(keepalive))
                        if not await self._on_idle():
                            await self._end_gone(send, continuity)
                            return
                        continue
                    following = continuity.follow(batch)
                    if following < len(batch):
                        await send(_body(self._truncated(batch, following, continuity)))
                        self.end_reason = "truncated"
                        return
                    if len(batch) == 1:
                        chunk = batch[0].frame(media_type)
                    else:
                        chunk = b"".join([event.frame(media_type) for event in batch])
                    if chunk:  # text/plain has nothing to say for some events
                        await send(_body(chunk))
                    self.events_sent += len(batch)
                    self.bytes_sent += len(chunk)
                    if batch[-1].is_terminal:
                        self.end_reason = "terminal"
                    if self._on_batch is not None:
                        self._on_batch(batch)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, AtCapacity) as exc:
            # The response has started; end it cleanly and let the client resume from its cursor.
            logger.warning("stream ended early: %s", type(exc).__name__)
            self.end_reason = "store_error"

    async def _end_gone(self, send: Send, continuity: SeqContinuity) -> None:
        """The stream went (deleted or expired) while this reader waited for more."""
        self.end_reason = "gone"
        final = await self._on_gone() if self._on_gone is not None else None
        read_up_to = continuity.last.id if continuity.last else self._opened.after_id
        if final is None or final.order <= (parse_stream_id(read_up_to) or (0, 0)):
            return
        # Delivered even when the reader was further behind: the events it had not read went with
        # the conversation, and what it can still learn is that the run ended.
        chunk = final.frame(self._format.media_type)
        if chunk:
            await send(_body(chunk))
        self.events_sent += 1
        self.bytes_sent += len(chunk)
        self.end_reason = "terminal"
        if self._on_batch is not None:
            self._on_batch([final])

    def _truncated(self, batch: list[Event], following: int, continuity: SeqContinuity) -> bytes:
        """The events before the hole the ``MAXLEN`` cap left, then the frame that names it.

        The ``200`` is sent already, so the response ends with an explicit frame rather than an
        error status, and never reads on past the hole as if nothing was missing.
        """
        assert continuity.last is not None  # nothing to follow: the first event always does
        logger.warning("stream truncated under a live reader: the MAXLEN cap overtook it")
        media_type = self._format.media_type
        delivered = b"".join([event.frame(media_type) for event in batch[:following]])
        resume_cursor = stream_id_before(batch[following].id)
        return delivered + truncation_notice(media_type, continuity.last.id, resume_cursor)


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
