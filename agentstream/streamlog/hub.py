"""The per-process stream hub: a few blocking ``XREAD``s serve every live reader.

A reader that has caught up joins the hub at its last id and gets a :class:`Subscription`. The
hub spreads the streams that have readers over a fixed number of *lanes*, one Redis connection
each; a lane issues one blocking ``XREAD`` over all of its streams, decodes each new entry once
and hands the same :class:`~agentstream.events.Event` to every reader of that stream (the
encodings are cached on the event, so they are computed once too).

A lane blocked in ``XREAD`` is woken at once when a new stream joins it or its last reader of a
stream leaves: every lane's read also covers a small wake stream of its own, and such a change
appends to it. The wake stream is read from the
last id the lane saw (not ``$``), so a wake that reaches Redis before the read still counts. Plain
``XADD`` works on every Redis from 6.0 and needs no ``CLIENT`` permissions.

A reader whose bounded queue fills is cut loose: it keeps what is queued, ends its response, and
the client resumes by cursor; the others are not held back. A reader that goes away leaves at once.
If a lane's connection fails, its readers' responses end the same way.

On a Redis Cluster (or any Redis that refuses multi-slot commands) one ``XREAD`` can only cover
keys of one slot. There the hub is *grouped*: it keeps one lane per slot group
(:data:`~.keys.SLOT_GROUPS`, see :mod:`.keys`), created when the group's first stream gets a
reader; every stream and the lane's wake stream share the group's hash tag. A worker then holds at
most one hub connection per group, however many readers and streams it serves. A hub that is not
grouped and meets ``CROSSSLOT`` (a proxy-clustered Redis reached with a plain client) turns
grouped; the readers of that read go on with a blocking read each for the rest of their response.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque

import redis.asyncio as aioredis
import redis.exceptions

from ..events import Event
from .keys import hash_tag

logger = logging.getLogger(__name__)

WAKE_KEY_TTL_MS = 3_600_000
UNSUPPORTED = "unsupported"  # why subscriptions end when Redis cannot serve the hub
# How long one blocking read waits before it is reissued (with the current set of streams).
BLOCK_MS = 5_000
# A timer may fire this much before its deadline (the loop's clock resolution and rounding).
_TIMER_SLACK = 0.001


class Subscription:
    """One reader's place in the hub: a bounded queue of events and a way to wait for it.

    A reader waits once per event it gets, so a wait costs no timer of its own: one timer per
    subscription stays armed and, when it fires early (events came meanwhile), is moved on to the
    current wait's deadline. It fires at most once per keep-alive interval, not once per event.
    """

    __slots__ = (
        "_deadline",
        "_limit",
        "_loop",
        "_queue",
        "_timer",
        "_waiter",
        "ended",
        "key",
        "reason",
    )

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.ended = False
        self.reason = ""

    def offer(self, event: Event) -> bool:
        """Queue an event; ``False`` when the queue was full and the reader is now cut loose."""
        if len(self._queue) >= self._limit:
            self.end("slow")
            return False
        self._queue.append(event)
        self._wake()
        return True

    def end(self, reason: str) -> None:
        """No more events will come: what is queued is delivered, then the response ends."""
        if not self.ended:
            self.ended = True
            self.reason = reason
            self._wake()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def take(self, timeout: float) -> list[Event]:
        """Everything queued, waiting up to ``timeout`` seconds for something to arrive."""
        if not self._queue and not self.ended:
            self._deadline = self._loop.time() + timeout
            if self._timer is None or self._timer.when() > self._deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self._loop.call_at(self._deadline, self._on_timer)
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        events = list(self._queue)
        self._queue.clear()
        return events

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # nobody waits; the next wait arms a timer again
        if self._deadline - self._loop.time() <= _TIMER_SLACK:
            _resolve(self._waiter)
        else:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Stream:
    """A stream with readers: where the hub has read up to, and who gets what comes next."""

    __slots__ = ("last_id", "subscribers")

    def __init__(self, last_id: str) -> None:
        self.last_id = last_id
        self.subscribers: set[Subscription] = set()


class _Lane:
    """One connection's worth of streams, read by one blocking ``XREAD`` at a time."""

    def __init__(self, hub: StreamHub, wake_key: str, *, single_slot: bool = False) -> None:
        self.hub = hub
        self.single_slot = single_slot  # a slot group's lane: its keys share one hash tag
        self.streams: dict[str, _Stream] = {}
        self.wake_key = wake_key
        self.wake_last = "0-0"
        self.task: asyncio.Task[None] | None = None
        self.reading = False  # the current XREAD's set of streams is fixed
        self.wake_sent = False

    def added_stream(self) -> None:
        """A stream joined: make sure the lane reads it now, not after the current block."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
            self.hub.tasks.add(self.task)
            self.task.add_done_callback(self.hub.tasks.discard)
        else:
            self._reissue_read()

    def removed_stream(self) -> None:
        """A stream lost its last reader: stop reading it now, not after the current block."""
        self._reissue_read()

    def _reissue_read(self) -> None:
        if self.reading and not self.wake_sent:
            self.wake_sent = True
            wake = asyncio.get_running_loop().create_task(self._wake())
            self.hub.tasks.add(wake)
            wake.add_done_callback(self.hub.tasks.discard)

    async def _wake(self) -> None:
        try:
            async with self.hub.waker.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
                pipe.pexpire(self.wake_key, WAKE_KEY_TTL_MS)
                await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            # The new stream is still read when the current block times out.
            logger.warning("stream hub wake-up failed: %s", type(exc).__name__)

    async def _run(self) -> None:
        try:
            while self.streams:
                self.reading = True
                asked = dict(self.streams)
                keys = {self.wake_key: self.wake_last}
                keys.update((key, stream.last_id) for key, stream in asked.items())
                try:
                    reply = await self.hub.client.xread(
                        keys, count=self.hub.batch_size, block=BLOCK_MS
                    )
                finally:
                    self.reading = False
                    self.wake_sent = False
                for key, entries in reply or ():
                    if key == self.wake_key:
                        self.wake_last = entries[-1][0]
                        continue
                    stream = self.streams.get(key)
                    # A stream that was left and joined again during the read starts at its own
                    # new position: its next read fetches what it needs.
                    if stream is not None and stream is asked.get(key):
                        self._deliver(key, stream, entries)
        except redis.exceptions.ClusterCrossSlotError:
            # A clustered Redis (Azure Managed Redis among them) refuses an XREAD over keys in
            # different hash slots. This read's readers go on with a blocking read each; later
            # readers are served by one lane per slot group.
            if not self.single_slot:
                if not self.hub.grouped:
                    logger.warning(
                        "Redis refuses reading streams of several slots at once (clustered); "
                        "the stream hub now reads each slot group on a lane of its own"
                    )
                self.hub.grouped = True
            elif not self.hub.unsupported:
                logger.warning(
                    "Redis refuses reading several streams at once; the stream hub is off, "
                    "every reader uses a blocking read of its own"
                )
                self.hub.unsupported = True
            self._end_all(UNSUPPORTED)
        except (redis.exceptions.RedisError, OSError) as exc:
            logger.warning("stream hub read failed, ending its readers: %s", type(exc).__name__)
            self._end_all("redis")
        except Exception as exc:  # noqa: BLE001 - whatever it was, no reader may wait forever
            logger.error("stream hub failed, ending its readers: %s", type(exc).__name__)
            self._end_all("error")
        except asyncio.CancelledError:
            self._end_all("closed")
            raise

    def _deliver(
        self, key: str, stream: _Stream, entries: list[tuple[str, dict[str, str]]]
    ) -> None:
        for entry_id, fields in entries:
            event = Event.from_entry(entry_id, fields)
            stream.last_id = event.id
            for subscription in tuple(stream.subscribers):
                if not subscription.offer(event):
                    stream.subscribers.discard(subscription)
        if not stream.subscribers:
            del self.streams[key]

    def _end_all(self, reason: str) -> None:
        for stream in self.streams.values():
            for subscription in stream.subscribers:
                subscription.end(reason)
        self.streams.clear()


class StreamHub:
    """Live readers of one event loop, served by ``lanes`` blocking reads."""

    def __init__(
        self,
        client: aioredis.Redis,
        waker: aioredis.Redis,
        *,
        lanes: int,
        queue_limit: int,
        batch_size: int = 100,
        grouped: bool = False,
    ) -> None:
        self.client = client  # one connection per lane, for the blocking reads
        self.waker = waker  # short commands: the wake-up appends
        self.batch_size = batch_size
        self.queue_limit = queue_limit
        self.tasks: set[asyncio.Task[None]] = set()
        self.unsupported = False  # set once Redis refused even a single-slot multi-stream read
        self.grouped = grouped  # one lane per slot group (a cluster), else ``lanes`` lanes
        self._id = uuid.uuid4().hex
        self._lanes = [
            _Lane(self, f"agentstream-hub-wake:{self._id}:{index}") for index in range(lanes)
        ]
        self._group_lanes: dict[str, _Lane] = {}

    def join(self, key: str, last_id: str) -> tuple[Subscription, str]:
        """Subscribe to ``key`` after ``last_id``.

        Returns the subscription and the id the hub has already read the stream up to. Events
        after that id will be queued; if it is later than ``last_id`` the reader fetches the ones
        in between itself, and if it is earlier the reader skips those it already has.
        """
        lane = self._lane_of(key)
        stream = lane.streams.get(key)
        created = stream is None
        if stream is None:
            stream = lane.streams[key] = _Stream(last_id)
        subscription = Subscription(key, self.queue_limit)
        stream.subscribers.add(subscription)
        if created:
            lane.added_stream()
        return subscription, stream.last_id

    def leave(self, subscription: Subscription) -> None:
        """The reader is gone (finished, disconnected or cut loose)."""
        subscription.end("left")
        for lane in self._all_lanes():
            stream = lane.streams.get(subscription.key)
            if stream is not None and subscription in stream.subscribers:
                stream.subscribers.discard(subscription)
                if not stream.subscribers:
                    del lane.streams[subscription.key]
                    lane.removed_stream()
                return

    def reader_count(self) -> int:
        return sum(len(s.subscribers) for lane in self._all_lanes() for s in lane.streams.values())

    def lane_count(self) -> int:
        """Lanes that read (each holds one Redis connection while it does)."""
        return sum(1 for lane in self._all_lanes() if lane.streams)

    async def aclose(self) -> None:
        for task in tuple(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _all_lanes(self) -> list[_Lane]:
        return [*self._lanes, *self._group_lanes.values()]

    def _lane_of(self, key: str) -> _Lane:
        for lane in self._all_lanes():
            if key in lane.streams:
                return lane
        if self.grouped:
            tag = hash_tag(key)
            group_lane = self._group_lanes.get(tag)
            if group_lane is None:
                wake_key = f"agentstream-hub-wake:{{{tag}}}:{self._id}"
                group_lane = self._group_lanes[tag] = _Lane(self, wake_key, single_slot=True)
            return group_lane
        return min(self._lanes, key=lambda lane: len(lane.streams))
