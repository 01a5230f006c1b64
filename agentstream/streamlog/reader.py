"""The asynchronous stream reader the HTTP stream function uses.

:func:`open_stream` checks everything that decides the response status *before* the response
starts (unknown conversation, nothing to deliver, trimmed history, a cursor beyond the end, the
worker at capacity); ``items()`` then yields events strictly after the cursor: non-blocking
``XREAD COUNT n`` while catching up, then live events, a keep-alive tick (``KEEPALIVE``) whenever
the stream stayed idle for the keep-alive interval, and stops after the first terminal event or at
the maximum duration.

Live events come from the process's :class:`~.hub.StreamHub` (:class:`HubStream`), or, with the
hub switched off, from one ``XREAD BLOCK`` per reader on the last id (:class:`OpenStream`).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from ..events import TERMINAL_TYPES, Event
from .capacity import AtCapacity
from .cursor import Cursor
from .hub import UNSUPPORTED, StreamHub
from .keys import meta_key, parse_stream_id, stream_id_before, stream_key

KEEPALIVE = None  # what items() yields when the stream stayed idle for a keep-alive interval
# Entries per non-blocking read. A client resuming far behind gets its backlog in pages this large,
# each one read and one write (5,000 events: five round trips, not fifty); a page of a thousand
# four-character deltas is about 200 KB in the worker while it is written.
CATCH_UP_PAGE = 1000


class ConversationNotFound(Exception):
    """No stream for this conversation: it never existed or its TTL ran out."""


class NothingToDeliver(Exception):
    """Nothing after the cursor and no run in progress."""


class CursorTrimmed(Exception):
    """Events after the cursor were trimmed away by the MAXLEN cap."""


class CursorBeyondEnd(Exception):
    """The cursor is later than the newest event: it was not handed out by this stream."""


class ReaderSlots:
    """How many stream responses a worker process serves at once (``STREAM_MAX_READERS``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def acquire(self) -> Callable[[], None]:
        """Take a slot or raise :class:`AtCapacity`; returns the (idempotent) release."""
        if self.in_use >= self.limit:
            raise AtCapacity("this worker serves its maximum number of streams")
        self.in_use += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_use -= 1

        return release


_slots: ReaderSlots | None = None


def reader_slots(limit: int) -> ReaderSlots:
    """The process's stream slots (created with the first stream's ``STREAM_MAX_READERS``)."""
    global _slots
    if _slots is None:
        _slots = ReaderSlots(limit)
    return _slots


def _no_slot() -> None:
    return None


@dataclass
class _Reading:
    """What both readers share: ``items()`` and ``batches()`` over a ``_batches()`` generator.

    ``batches()`` yields lists of events in order (a list holds whatever was ready at once, so a
    response can send it in one write) and ``KEEPALIVE`` ticks; ``items()`` yields single events.
    Both give the reader's stream slot back when they end, however they end.
    """

    client: aioredis.Redis
    key: str
    after_id: str
    batch_size: int
    keepalive_seconds: float
    max_seconds: float
    clock: Callable[[], float] = field(default=time.monotonic, kw_only=True)
    release: Callable[[], None] = field(default=_no_slot, repr=False, kw_only=True)
    # The entry at the cursor when the stream was opened (when the cursor names one still kept):
    # the first event read must follow it, or entries in between were trimmed away meanwhile.
    cursor_event: Event | None = field(default=None, kw_only=True)

    def batches(self) -> AsyncGenerator[list[Event] | None, None]:
        """Lists of events after the cursor, with ``KEEPALIVE`` (None) ticks while idle.

        The generator itself, with no relaying layer: this runs once per event per live reader.
        """
        return self._batches()

    async def items(self) -> AsyncIterator[Event | None]:
        """Events after the cursor, with ``KEEPALIVE`` (None) ticks while idle."""
        batches = self.batches()
        try:
            async for batch in batches:
                if batch is None:
                    yield KEEPALIVE
                else:
                    for event in batch:
                        yield event
        finally:
            await batches.aclose()

    def _batches(self) -> AsyncGenerator[list[Event] | None, None]:
        """The reading; gives the slot back (``release``) in its ``finally``."""
        raise NotImplementedError

    async def _read(self, after_id: str) -> list[Event]:
        """One non-blocking read of up to ``batch_size`` entries after ``after_id``."""
        reply = await self.client.xread({self.key: after_id}, count=self.batch_size)
        return [Event.from_entry(i, f) for i, f in (reply[0][1] if reply else ())]


def _through_terminal(events: list[Event]) -> tuple[list[Event], bool]:
    """The events up to and including the first terminal one, and whether there was one."""
    for index, event in enumerate(events):
        if event.type in TERMINAL_TYPES:
            return events[: index + 1], True
    return events, False


@dataclass
class OpenStream(_Reading):
    """A reader with a blocking read of its own (``STREAM_HUB=false``)."""

    async def _batches(self) -> AsyncGenerator[list[Event] | None, None]:
        try:
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
                events, ended = _through_terminal([Event.from_entry(i, f) for i, f in entries])
                last_id = events[-1].id
                yield events
                if ended:
                    return
        finally:
            self.release()


@dataclass
class HubStream(_Reading):
    """A reader that catches up by itself, then takes live events from the stream hub."""

    hub: StreamHub | None = field(default=None, kw_only=True)
    # Where to go on with a blocking read of its own if Redis cannot serve the hub.
    fallback: aioredis.Redis | None = field(default=None, kw_only=True)

    async def _batches(self) -> AsyncGenerator[list[Event] | None, None]:
        try:
            assert self.hub is not None
            deadline = self.clock() + self.max_seconds
            last_id = self.after_id
            # 1. Catch up with non-blocking reads until a short batch says nothing more is waiting.
            while True:
                events, ended = _through_terminal(await self._read(last_id))
                if events:
                    last_id = events[-1].id
                    yield events
                if ended:
                    return
                if len(events) < self.batch_size:
                    break
            last = _parse(last_id)
            # 2. Join the hub at the last id. Nothing can be lost between the read above and the
            # join: join() is synchronous and reports how far the hub has read this stream already.
            subscription, hub_id = self.hub.join(self.key, last_id)
            try:
                hub_last = _parse(hub_id)
                # 3. The hub is ahead (other readers joined earlier): fetch the gap up to its id.
                while last < hub_last:
                    entries = await self._read(last_id)
                    events, ended = _through_terminal([e for e in entries if e.order <= hub_last])
                    if events:
                        last, last_id = events[-1].order, events[-1].id
                        yield events
                    if ended:
                        return
                    if not events or len(entries) < self.batch_size:
                        break
                # 4. Live: events from the hub. Those this reader already has (the hub was behind
                # it) are skipped until the hub's events pass its position; after that every event
                # the hub hands over is new, and the loop does no per-event comparison.
                skipping = True
                while True:
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        return
                    wait = min(self.keepalive_seconds, remaining)
                    taken = await subscription.take(wait)
                    if taken:
                        events = [e for e in taken if e.order > last] if skipping else taken
                        if events:
                            skipping = False
                            events, ended = _through_terminal(events)
                            last_id = events[-1].id
                            yield events
                            if ended:
                                return
                        continue
                    if subscription.ended and subscription.reason == UNSUPPORTED and self.fallback:
                        async for batch in self._alone(last_id, remaining)._batches():
                            yield batch
                        return
                    if subscription.ended:
                        return  # cut loose or the hub lost Redis: the client resumes by cursor
                    if wait < remaining:
                        yield KEEPALIVE
            finally:
                self.hub.leave(subscription)
        finally:
            self.release()

    def _alone(self, after_id: str, max_seconds: float) -> OpenStream:
        assert self.fallback is not None
        return OpenStream(
            self.fallback,
            self.key,
            after_id,
            self.batch_size,
            self.keepalive_seconds,
            max_seconds,
            clock=self.clock,
        )


async def open_stream(
    client: aioredis.Redis,
    conversation_id: str,
    cursor: Cursor,
    *,
    keepalive_seconds: float,
    max_seconds: float,
    batch_size: int = CATCH_UP_PAGE,
    hub: StreamHub | None = None,
    fallback: aioredis.Redis | None = None,
    slots: ReaderSlots | None = None,
    requeue_window_seconds: float = 0.0,
) -> OpenStream | HubStream:
    """Decide where reading starts, or raise why there is nothing to stream.

    One round trip (a ``MULTI`` pipeline) reads the first and last entries and the meta fields.
    With a ``hub`` (that Redis can serve), live events come from it; otherwise each reader has a
    blocking read of its own on ``fallback`` (or ``client``). With ``slots``, a slot is taken
    first (:class:`AtCapacity` when none is free) and given back when the stream's reading ends,
    or when the opened stream is dropped unread. A cursor beyond the end no more than
    ``requeue_window_seconds`` old (the start deadline) may name a ``run.queued`` a failover lost
    and its entity has yet to write again (:mod:`.requeue`): the read waits for it.
    """
    release = slots.acquire() if slots is not None else _no_slot
    try:
        key, after_id, cursor_event = await _start_position(
            client, conversation_id, cursor, requeue_window_seconds
        )
    except BaseException:
        release()
        raise
    common = (key, after_id, batch_size, keepalive_seconds, max_seconds)
    opened: OpenStream | HubStream
    if hub is not None and not hub.unsupported:
        opened = HubStream(
            client,
            *common,
            release=release,
            cursor_event=cursor_event,
            hub=hub,
            fallback=fallback,
        )
    else:
        opened = OpenStream(fallback or client, *common, release=release, cursor_event=cursor_event)
    weakref.finalize(opened, release)
    return opened


async def _start_position(
    client: aioredis.Redis, conversation_id: str, cursor: Cursor, requeue_window_seconds: float
) -> tuple[str, str, Event | None]:
    skey, mkey = stream_key(conversation_id), meta_key(conversation_id)
    named = cursor.value not in (None, "0-0")  # a cursor that may name an entry
    async with client.pipeline(transaction=True) as pipe:
        pipe.xrange(skey, count=1)
        pipe.xrevrange(skey, count=1)
        pipe.hmget(mkey, "latest_start", "first_id", "active_run")
        if named:
            pipe.xrange(skey, min=cursor.value, max=cursor.value)
        first, last, (latest_start, first_id, active_run), *at_cursor = await pipe.execute()
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
    beyond_end = _before(last_event.id, after_id)
    if beyond_end and not active_run:
        # With a run going, a cursor beyond the end was handed out by entries a failover lost:
        # the run's writer writes them again with their ids, and the read waits for them (the
        # run's lease bounds the wait: a run whose writer is gone is ended by the keep-alive).
        # Without one, a recent cursor may name a lost run.queued its entity writes again.
        if not _may_be_requeued(after_id, requeue_window_seconds):
            raise CursorBeyondEnd(conversation_id)
    elif not _before(after_id, last_event.id) and last_event.type in TERMINAL_TYPES:
        raise NothingToDeliver(conversation_id)
    cursor_event = Event.from_entry(*at_cursor[0][0]) if at_cursor and at_cursor[0] else None
    return skey, after_id, cursor_event


# How far a cursor's time may lead this worker's clock (the Redis server's clock made the id).
_CLOCK_SKEW_MS = 5000


def _may_be_requeued(after_id: str, window_seconds: float) -> bool:
    """Whether a run queued at ``after_id`` could still be written again from its signal."""
    if window_seconds <= 0:
        return False
    age_ms = time.time() * 1000 - _parse(after_id)[0]
    return -_CLOCK_SKEW_MS <= age_ms <= window_seconds * 1000


def _parse(stream_id: str) -> tuple[int, int]:
    parsed = parse_stream_id(stream_id)
    assert parsed is not None
    return parsed


def _before(a: str, b: str) -> bool:
    """Stream id ``a`` sorts strictly before ``b``."""
    pa, pb = parse_stream_id(a), parse_stream_id(b)
    assert pa is not None and pb is not None
    return pa < pb
