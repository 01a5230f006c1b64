"""The per-process stream hub: a bounded set of Redis connections serves every live reader.

A reader that has caught up joins the hub at its last id and gets a :class:`Subscription`. The hub
learns that a stream has new entries from a **sharded pub/sub notice**: every script that appends
to a stream publishes the stream's key on its slot group's channel (``SPUBLISH``, in the same
script, so the writer pays no extra round trip; :func:`~.keys.notice_channel`). The hub keeps one
subscriber connection per Redis node (shard) for the channels of the groups that have readers, and
on a notice reads the group's notified streams with one non-blocking ``XREAD`` (the group's keys
share one slot), on a pool of at most ``STREAM_HUB_CONNECTIONS - 1`` connections per node. Each
entry is decoded once and the same :class:`~agentstream.events.Event` goes to every reader of that
stream (its encodings are cached on it, so they are computed once too). So a worker holds at most
``STREAM_HUB_CONNECTIONS`` hub connections per node, whatever its readers and streams, on a single
Redis, a Redis Cluster and a proxy-clustered Redis alike: no command of the hub spans two slots.

Pub/sub delivers at most once, so nothing relies on a notice alone. A group's streams are read
once its subscription is confirmed (``ssubscribe``), which covers what was appended before; a
stream that joins a live group is read at once. When the subscriber connection drops, or Redis
moves the channel's slot away (``-MOVED`` on ``SSUBSCRIBE``, an unasked ``sunsubscribe`` when the
node loses the slot), the channel is subscribed again at its owner and read again after the
confirmation. Only when Redis stays unreachable for about ten seconds do the readers' responses
end (the clients resume by cursor).

A reader whose bounded queue fills is cut loose: it keeps what is queued, ends its response, and
the client resumes by cursor; the others are not held back. A reader that goes away leaves at once;
a group without readers is unsubscribed. A Redis without sharded pub/sub (Redis 6) or an ACL that
refuses it turns the hub off: readers go on with a blocking read each (:data:`UNSUPPORTED`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from ..backoff import REDIS_WRITE
from ..events import Event
from .keys import hash_tag, notice_channel

logger = logging.getLogger(__name__)

UNSUPPORTED = "unsupported"  # why subscriptions end when Redis cannot serve the hub
# A subscriber connection that stayed silent this long is sent a PING; one that stays silent
# for another such interval is taken for dead and replaced.
PING_SECONDS = 10.0
# Reconnecting a subscriber: about ten seconds of tries (a failover's election fits), then the
# readers of its groups end and their clients resume by cursor.
RECONNECT_TRIES = 12
# A timer may fire this much before its deadline (the loop's clock resolution and rounding).
_TIMER_SLACK = 0.001
_NOTICE_PREFIX = notice_channel("")[: -len("{}")]


class HubShards(Protocol):
    """Where the hub's subscriptions go: the node that owns a channel, and a connection to it."""

    async def owner(self, channel: str, *, refresh: bool = False) -> str:
        """The name of the node serving ``channel``'s slot (``refresh``: ask Redis again)."""
        ...

    async def connect(self, node: str) -> AbstractConnection:
        """A new connection to ``node`` (authenticated, named, not pooled)."""
        ...


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


class _Group:
    """The streams of one slot group that have readers: one channel, one read at a time."""

    __slots__ = ("channel", "dirty", "live", "node", "reader", "streams", "tag")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.channel = notice_channel(tag)
        self.streams: dict[str, _Stream] = {}
        self.dirty: set[str] = set()  # streams to read: notified, or not read since they joined
        self.live = False  # the subscription is confirmed: notices arrive
        self.node: _NodeSubscriber | None = None
        self.reader: asyncio.Task[None] | None = None


class StreamHub:
    """Live readers of one event loop, served by a bounded set of connections per Redis node."""

    def __init__(
        self,
        client: aioredis.Redis,
        shards: HubShards,
        *,
        queue_limit: int,
        batch_size: int = 100,
    ) -> None:
        self.client = client  # the non-blocking reads (a pool bounded per node)
        self.shards = shards
        self.batch_size = batch_size
        self.queue_limit = queue_limit
        self.tasks: set[asyncio.Task[None]] = set()
        self.unsupported = False  # set once Redis refused sharded pub/sub
        self._groups: dict[str, _Group] = {}
        self._nodes: dict[str, _NodeSubscriber] = {}

    def join(self, key: str, last_id: str) -> tuple[Subscription, str]:
        """Subscribe to ``key`` after ``last_id``.

        Returns the subscription and the id the hub has already read the stream up to. Events
        after that id will be queued; if it is later than ``last_id`` the reader fetches the ones
        in between itself, and if it is earlier the reader skips those it already has.
        """
        tag = hash_tag(key)
        group = self._groups.get(tag)
        if group is None:
            group = self._groups[tag] = _Group(tag)
            self.spawn(self._place(group))
        stream = group.streams.get(key)
        subscription = Subscription(key, self.queue_limit)
        if stream is None:
            stream = group.streams[key] = _Stream(last_id)
            if group.live:
                self._mark(group, key)
            # else: read once the subscription is confirmed
        stream.subscribers.add(subscription)
        return subscription, stream.last_id

    def leave(self, subscription: Subscription) -> None:
        """The reader is gone (finished, disconnected or cut loose)."""
        subscription.end("left")
        group = self._groups.get(hash_tag(subscription.key))
        stream = group.streams.get(subscription.key) if group is not None else None
        if group is not None and stream is not None and subscription in stream.subscribers:
            stream.subscribers.discard(subscription)
            if not stream.subscribers:
                self._forget_stream(group, subscription.key)

    def reader_count(self) -> int:
        return sum(
            len(s.subscribers) for group in self._groups.values() for s in group.streams.values()
        )

    def connection_count(self) -> int:
        """Subscriber connections open plus reads in flight (each holds a Redis connection)."""
        subscribers = sum(1 for node in self._nodes.values() if node.conn is not None)
        reads = sum(1 for group in self._groups.values() if group.reader is not None)
        return subscribers + reads

    async def aclose(self) -> None:
        for task in tuple(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- subscriptions

    async def _place(self, group: _Group, *, refresh: bool = False) -> None:
        """Subscribe the group's channel at the node that owns it."""
        try:
            node = await self.shards.owner(group.channel, refresh=refresh)
        except (redis.exceptions.RedisError, OSError) as exc:
            logger.warning("stream hub cannot locate its channel: %s", type(exc).__name__)
            self._end_group(group, "redis")
            return
        if self._groups.get(group.tag) is group:
            subscriber = self._nodes.get(node)
            if subscriber is None:
                subscriber = self._nodes[node] = _NodeSubscriber(self, node)
            subscriber.want(group)

    def _confirmed(self, group: _Group) -> None:
        """The group's subscription is (again) confirmed: read every stream, for what came
        before it."""
        if self._groups.get(group.tag) is group:
            group.live = True
            for key in group.streams:
                self._mark(group, key)

    def _notice(self, group: _Group, key: str) -> None:
        if group.live and key in group.streams:
            self._mark(group, key)

    def _relocate(self, group: _Group) -> None:
        """The group's node no longer serves its channel: subscribe where it went."""
        group.live = False
        group.node = None
        if self._groups.get(group.tag) is group:
            self.spawn(self._place(group, refresh=True))

    def _refused(self) -> None:
        """Redis has no sharded pub/sub for us: every reader goes on with a read of its own."""
        if not self.unsupported:
            logger.warning(
                "Redis refuses sharded pub/sub (SSUBSCRIBE); the stream hub is off, every reader "
                "uses a blocking read of its own"
            )
            self.unsupported = True
        for group in tuple(self._groups.values()):
            self._end_group(group, UNSUPPORTED)

    # -- reads

    def _mark(self, group: _Group, key: str) -> None:
        group.dirty.add(key)
        if group.reader is None:
            group.reader = self.spawn(self._read(group))

    async def _read(self, group: _Group) -> None:
        """Read the group's notified streams until none is left, one ``XREAD`` at a time."""
        try:
            while group.dirty:
                asked = {key: group.streams[key] for key in group.dirty if key in group.streams}
                group.dirty.clear()
                if not asked:
                    continue
                reply = await self.client.xread(
                    {key: stream.last_id for key, stream in asked.items()},
                    count=self.batch_size,
                )
                for key, entries in reply or ():
                    stream = group.streams.get(key)
                    # A stream that was left and joined again during the read starts at its own
                    # new position: it is read again.
                    if stream is not None and stream is asked.get(key):
                        self._deliver(group, key, stream, entries)
                        if len(entries) >= self.batch_size and key in group.streams:
                            group.dirty.add(key)  # there may be more waiting
            group.reader = None
        except (redis.exceptions.RedisError, OSError) as exc:
            group.reader = None
            logger.warning("stream hub read failed, ending its readers: %s", type(exc).__name__)
            self._end_group(group, "redis")
        except asyncio.CancelledError:
            group.reader = None
            self._end_group(group, "closed")
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it was, no reader may wait forever
            group.reader = None
            logger.error("stream hub failed, ending its readers: %s", type(exc).__name__)
            self._end_group(group, "error")

    def _deliver(
        self, group: _Group, key: str, stream: _Stream, entries: list[tuple[str, dict[str, str]]]
    ) -> None:
        for entry_id, fields in entries:
            event = Event.from_entry(entry_id, fields)
            stream.last_id = event.id
            for subscription in tuple(stream.subscribers):
                if not subscription.offer(event):
                    stream.subscribers.discard(subscription)
        if not stream.subscribers:
            self._forget_stream(group, key)

    def _forget_stream(self, group: _Group, key: str) -> None:
        del group.streams[key]
        group.dirty.discard(key)
        if not group.streams:
            self._forget_group(group)

    def _forget_group(self, group: _Group) -> None:
        if self._groups.get(group.tag) is group:
            del self._groups[group.tag]
        if group.node is not None:
            group.node.drop(group)
            group.node = None

    def _end_group(self, group: _Group, reason: str) -> None:
        for stream in group.streams.values():
            for subscription in stream.subscribers:
                subscription.end(reason)
        group.streams.clear()
        group.dirty.clear()
        self._forget_group(group)


class _NodeSubscriber:
    """One connection to one Redis node, subscribed to the channels of the groups it serves.

    Commands are sent as the wanted channels change, while the connection's one reading loop waits
    for replies: confirmations, notices, ``MOVED`` and the node's own ``sunsubscribe`` when it
    loses a slot. Each channel gets an ``SSUBSCRIBE`` of its own (one command may not span slots).
    """

    def __init__(self, hub: StreamHub, node: str) -> None:
        self.hub = hub
        self.node = node
        self.wanted: dict[str, _Group] = {}
        self.sent: set[str] = set()  # tags subscribed (or asked) on this connection
        self.confirmed: set[str] = set()
        self.leaving: dict[str, int] = {}  # unsubscribes asked for and not answered yet
        self.conn: AbstractConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.flushing = False
        self.failures = 0  # connection attempts in a row that came to nothing

    def want(self, group: _Group) -> None:
        self.wanted[group.tag] = group
        group.node = self
        if self._subscribed(group.tag):
            self.hub._confirmed(group)  # still subscribed for an earlier group of the same tag
        self._changed()

    def _subscribed(self, tag: str) -> bool:
        """Notices of ``tag`` arrive and keep arriving (no unsubscribe is on its way)."""
        return tag in self.sent and tag in self.confirmed and not self.leaving.get(tag)

    def drop(self, group: _Group) -> None:
        if self.wanted.get(group.tag) is group:
            del self.wanted[group.tag]
            self._changed()

    def _changed(self) -> None:
        if self.task is None or self.task.done():
            if self.wanted:
                self.task = self.hub.spawn(self._run())
        elif self.conn is not None and not self.flushing:
            self.flushing = True
            self.hub.spawn(self._flush(self.conn))

    async def _flush(self, conn: AbstractConnection) -> None:
        """Send the (un)subscriptions that make the connection's channels the wanted ones."""
        try:
            while True:
                if self.conn is not conn or conn is None:
                    return
                subscribe = [tag for tag in self.wanted if tag not in self.sent]
                unsubscribe = [tag for tag in self.sent if tag not in self.wanted]
                if not subscribe and not unsubscribe:
                    return
                for tag in subscribe:
                    self.sent.add(tag)
                    await conn.send_command("SSUBSCRIBE", notice_channel(tag), check_health=False)
                for tag in unsubscribe:
                    self.sent.discard(tag)
                    self.leaving[tag] = self.leaving.get(tag, 0) + 1
                    await conn.send_command("SUNSUBSCRIBE", notice_channel(tag), check_health=False)
        except (redis.exceptions.RedisError, OSError):
            pass  # the reading loop sees the connection fail and starts over
        finally:
            self.flushing = False

    async def _run(self) -> None:
        while self.wanted:
            try:
                conn = self.conn = await self.hub.shards.connect(self.node)
                try:
                    self.flushing = True
                    await self._flush(conn)
                    await self._listen(conn)
                finally:
                    self.conn = None
                    self.sent.clear()
                    self.confirmed.clear()
                    self.leaving.clear()
                    await conn.disconnect()
            except (redis.exceptions.RedisError, OSError) as exc:
                for group in self.wanted.values():
                    group.live = False
                self.failures += 1
                if self.failures > RECONNECT_TRIES:
                    self.failures = 0
                    logger.warning(
                        "stream hub lost Redis, ending its readers: %s", type(exc).__name__
                    )
                    for group in tuple(self.wanted.values()):
                        self.hub._end_group(group, "redis")
                    return
                await asyncio.sleep(REDIS_WRITE.delay(self.failures))
                # A failover may have moved the channels: each goes where its slot is now.
                for group in tuple(self.wanted.values()):
                    del self.wanted[group.tag]
                    self.hub._relocate(group)
            except asyncio.CancelledError:
                for group in tuple(self.wanted.values()):
                    self.hub._end_group(group, "closed")
                raise

    async def _listen(self, conn: AbstractConnection) -> None:
        """Handle replies until the connection fails or no channel is wanted any more."""
        pinged = False
        while self.wanted or self.sent:
            try:
                reply = await conn.read_response(timeout=PING_SECONDS, push_request=True)
            except redis.exceptions.MovedError as moved:
                self._moved(moved.slot_id)
                continue
            except redis.exceptions.ResponseError:
                # SSUBSCRIBE is unknown (Redis 6) or not permitted: not something a retry fixes.
                self.wanted.clear()
                self.hub._refused()
                return
            if reply is None:
                if pinged:
                    raise redis.exceptions.ConnectionError("no answer to PING")
                pinged = True
                await conn.send_command("PING", check_health=False)
                continue
            pinged = False
            self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return  # PONG
        kind, channel = reply[0], reply[1]
        tag = channel[len(_NOTICE_PREFIX) + 1 : -1]
        if kind == "smessage":
            group = self.wanted.get(tag)
            if group is not None:
                self.hub._notice(group, reply[2])
        elif kind == "ssubscribe":
            self.confirmed.add(tag)
            self.failures = 0
            group = self.wanted.get(tag)
            if group is not None and self._subscribed(tag):
                self.hub._confirmed(group)
        elif kind == "sunsubscribe":
            self.confirmed.discard(tag)
            if self.leaving.get(tag, 0) > 0:
                self.leaving[tag] -= 1
            else:
                # Unasked: the node lost the slot (a migration or a failover).
                self._lost(tag)

    def _moved(self, slot: int) -> None:
        for tag in tuple(self.sent):
            if key_slot(notice_channel(tag).encode()) == slot:
                self._lost(tag)

    def _lost(self, tag: str) -> None:
        self.sent.discard(tag)
        self.confirmed.discard(tag)
        group = self.wanted.pop(tag, None)
        if group is not None:
            self.hub._relocate(group)
