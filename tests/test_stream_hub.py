"""The stream hub, sized pools and event encoding, in one process against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

from agentstream.config import ConfigError, Settings
from agentstream.events import (
    MESSAGE_DELTA,
    NDJSON,
    RUN_COMPLETED,
    RUN_QUEUED,
    SSE,
    TEXT,
    Event,
    dumps_line,
    ndjson_event,
    sse_event,
    text_event,
)
from agentstream.redis_clients import AtCapacity, _Clients
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.hub import StreamHub, Subscription
from agentstream.streamlog.keys import group_tag, notice_channel, stream_key
from agentstream.streamlog.reader import (
    KEEPALIVE,
    CursorBeyondEnd,
    HubStream,
    ReaderSlots,
    open_stream,
)
from agentstream_dev.local_redis import start_redis_server

from .redis_server import free_port, running_redis_server
from .streamlog_helpers import new_conversation_id, run_log


def make_hub(
    port: int, connections: int = 4, queue_limit: int = 500, cluster: str = "auto"
) -> tuple[StreamHub, _Clients]:
    """A hub on the app's own pools (sizes, timeouts and retries as in production)."""
    settings = Settings.from_env(
        {
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{port}",
            "STREAM_HUB_CONNECTIONS": str(connections),
            "REDIS_CLUSTER": cluster,
        }
    )
    clients = _Clients(settings)
    hub = StreamHub(clients.hub, clients.hub_shards, queue_limit=queue_limit)
    return hub, clients


async def close_hub(hub: StreamHub, clients: _Clients) -> None:
    await hub.aclose()
    for client in (clients.requests, clients.readers, clients.hub, clients.blocking):
        await client.aclose()


@pytest_asyncio.fixture
async def hub_factory(
    redis_port: int, redis_client: redis.Redis
) -> AsyncIterator[Callable[..., StreamHub]]:
    made: list[tuple[StreamHub, _Clients]] = []

    def make(connections: int = 4, queue_limit: int = 500) -> StreamHub:
        made.append(make_hub(redis_port, connections, queue_limit))
        return made[-1][0]

    yield make
    for hub, clients in made:
        await close_hub(hub, clients)


@pytest_asyncio.fixture
async def hub_alone() -> AsyncIterator[tuple[StreamHub, redis.Redis, _Clients]]:
    """A hub on a Redis of its own: no other test's subscriber shares its channels (the session's
    Redis can hold those of apps that other test files left behind)."""
    with running_redis_server() as port, redis.Redis(port=port, decode_responses=True) as client:
        hub, clients = make_hub(port, connections=2)
        yield hub, client, clients
        await close_hub(hub, clients)


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 30.0) -> None:
    """Wait for a condition only observable by looking (a reader's place in the hub)."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.005)


async def events_of(opened: HubStream) -> list[Event]:
    return [item async for item in opened.items() if item is not None]


def expected_after(client: redis.Redis, cid: str, cursor: str) -> list[Event]:
    entries = client.xrange(stream_key(cid))
    return [Event.from_entry(i, f) for i, f in entries if _after(i, cursor)]


def _after(a: str, b: str) -> bool:
    pa, pb = a.split("-"), b.split("-")
    return (int(pa[0]), int(pa[1])) > (int(pb[0]), int(pb[1]))


async def hub_reader(
    aclient: aioredis.Redis, hub: StreamHub, cid: str, cursor: str, batch_size: int = 100
) -> HubStream:
    opened = await open_stream(
        aclient,
        cid,
        Cursor(cursor),
        keepalive_seconds=15,
        max_seconds=120,
        batch_size=batch_size,
        hub=hub,
    )
    assert isinstance(opened, HubStream)
    return opened


# --- encoding -----------------------------------------------------------------------------------

PAYLOADS = [
    {},
    {"text": 'Day 1: Zürich 東京 🚄 \u2028 \x85 "quoted" back\\slash\nnew line'},
    {"message": "plan a trip", "attempt": 2},
    {"call_id": "c1", "name": "weather", "arguments": '{"id": 3, "city": "Paris"}'},
    {"finish_reason": "stop", "usage": {"prompt_tokens": 3, "id": "nested id stays"}},
    {"id": "forged", "seq": 99, "type": "x", "result": "ok"},
    {"text": 'looks like "id": a member'},
    {"code": "worker_lost", "message": "The run stopped."},
]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("event_type", [MESSAGE_DELTA, RUN_QUEUED, RUN_COMPLETED])
def test_the_spliced_json_line_is_byte_equal_to_the_encoder(payload: dict, event_type: str) -> None:
    fields = {"type": event_type, "run": "ab12", "seq": "7", "ts": "1700000000123"}
    fields["data"] = dumps_line(payload)
    stored = Event.from_entry("1700000000123-4", fields)
    decoded = Event("1700000000123-4", event_type, "ab12", 7, 1700000000123, payload)
    assert stored.public_json() == dumps_line(decoded.to_public())
    assert stored.frame(SSE) == sse_event(decoded).encode()
    assert stored.frame(NDJSON) == ndjson_event(decoded).encode()
    assert stored.frame(TEXT) == text_event(decoded).encode()
    assert json.loads(stored.public_json())["id"] == "1700000000123-4"


# --- the hub ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_readers_joining_at_random_points_miss_and_repeat_nothing(
    redis_client: redis.Redis,
    aclient: aioredis.Redis,
    hub_factory: Callable[..., StreamHub],
    seed: int,
) -> None:
    rng = random.Random(seed)
    hub = hub_factory(connections=2)
    cids = [new_conversation_id() for _ in range(3)]
    logs = [run_log(redis_client, cid, "run") for cid in cids]
    ids: dict[str, list[str]] = {cid: ["0-0"] for cid in cids}
    readers: list[tuple[str, str, asyncio.Task[list[Event]]]] = []
    for log, cid in zip(logs, cids, strict=True):
        ids[cid].append(log.append(RUN_QUEUED, {"message": "go"}).id)

    async def read(cid: str, cursor: str) -> list[Event]:
        # Small batches exercise the catch-up loop and the fetch of the gap up to the hub.
        return await events_of(await hub_reader(aclient, hub, cid, cursor, rng.choice([2, 5])))

    for step in range(120):
        index = rng.randrange(len(cids))
        cid = cids[index]
        appended = await asyncio.to_thread(logs[index].append, MESSAGE_DELTA, {"text": f"{step}"})
        ids[cid].append(appended.id)
        for _ in range(rng.choice([0, 0, 1, 2])):
            join_cid = rng.choice(cids)
            cursor = rng.choice(ids[join_cid][-6:])
            readers.append((join_cid, cursor, asyncio.create_task(read(join_cid, cursor))))
        if rng.random() < 0.3:
            await asyncio.sleep(0)  # let readers interleave with the writer at varied points
    for log in logs:
        await asyncio.to_thread(log.append, RUN_COMPLETED, {"finish_reason": "stop"})
    assert len(readers) > 30
    async with asyncio.timeout(60):
        results = await asyncio.gather(*(task for _, _, task in readers))
    for (cid, cursor, _), got in zip(readers, results, strict=True):
        assert got == expected_after(redis_client, cid, cursor)
    assert hub.reader_count() == 0


async def test_a_slow_reader_is_cut_loose_and_the_others_finish(
    redis_client: redis.Redis, aclient: aioredis.Redis, hub_factory: Callable[..., StreamHub]
) -> None:
    hub = hub_factory(connections=2, queue_limit=4)
    cid = new_conversation_id()
    log = run_log(redis_client, cid, "run")
    first = log.append(RUN_QUEUED, {"message": "go"}).id
    slow = (await hub_reader(aclient, hub, cid, first)).items()
    slow_first = asyncio.create_task(anext(slow))
    fast = [asyncio.create_task(events_of(await hub_reader(aclient, hub, cid, first)))]
    await until(lambda: hub.reader_count() == 2)
    for i in range(30):
        await asyncio.to_thread(log.append, MESSAGE_DELTA, {"text": f"{i} "})
    await asyncio.to_thread(log.append, RUN_COMPLETED, {"finish_reason": "stop"})
    expected = expected_after(redis_client, cid, first)

    # The fast reader gets everything while the slow one is not reading at all.
    async with asyncio.timeout(60):
        assert await asyncio.gather(*fast) == [expected]
    assert hub.reader_count() == 0  # the slow reader was cut loose, not waited for

    # The slow reader's response ends cleanly after what was queued; its cursor resumes exactly.
    got = [await slow_first] + [e async for e in slow if e is not None]
    assert 1 <= len(got) < len(expected)
    assert got == expected[: len(got)]
    resumed = await events_of(await hub_reader(aclient, hub, cid, got[-1].id))
    assert got + resumed == expected


def shard_subscribers(client: redis.Redis, cid: str) -> int:
    """How many connections are subscribed to the conversation's group channel."""
    channel = notice_channel(group_tag(cid))
    return int(client.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1])


def cids_of_one_group(count: int) -> list[str]:
    """Conversation ids whose keys share one slot group."""
    first = new_conversation_id()
    cids = [first]
    while len(cids) < count:
        cid = new_conversation_id()
        if group_tag(cid) == group_tag(first):
            cids.append(cid)
    return cids


async def taken(subscription: Subscription, count: int) -> list[Event]:
    """The next ``count`` events the hub hands the subscription."""
    got: list[Event] = []
    async with asyncio.timeout(30):
        while len(got) < count:
            got += await subscription.take(1.0)
    return got


async def test_a_stream_joining_a_subscribed_group_is_read_at_once_and_nothing_blocks(
    hub_alone: tuple[StreamHub, redis.Redis, _Clients],
) -> None:
    hub, redis_client, _ = hub_alone
    first_cid, second_cid = cids_of_one_group(2)
    first_log, second_log = (
        run_log(redis_client, first_cid, "a"),
        run_log(redis_client, second_cid, "b"),
    )
    first_start = first_log.append(RUN_QUEUED, {"message": "a"}).id
    second_start = second_log.append(RUN_QUEUED, {"message": "b"}).id
    first, _ = hub.join(stream_key(first_cid), first_start)
    await until(lambda: shard_subscribers(redis_client, first_cid) == 1)
    first_log.append(MESSAGE_DELTA, {"text": "1"})
    await taken(first, 1)  # the group is subscribed and read
    # An entry of the second stream whose notice the hub handles before the stream has a reader
    # here (notices of one group come in order: the first stream's next one follows it), so
    # only the hub's read at the join delivers it.
    between = second_log.append(MESSAGE_DELTA, {"text": "between"}).id
    first_log.append(MESSAGE_DELTA, {"text": "2"})
    await taken(first, 1)
    second, _ = hub.join(stream_key(second_cid), second_start)
    assert [e.id for e in await taken(second, 1)] == [between]
    # One subscription serves the group, and no connection ever waits in a blocking read.
    assert shard_subscribers(redis_client, first_cid) == 1
    assert redis_client.info("clients")["blocked_clients"] == 0
    hub.leave(first)
    hub.leave(second)


async def test_a_reader_that_goes_away_leaves_the_hub_at_once(
    hub_alone: tuple[StreamHub, redis.Redis, _Clients],
) -> None:
    hub, redis_client, clients = hub_alone
    cid = new_conversation_id()
    start = run_log(redis_client, cid, "run").append(RUN_QUEUED, {"message": "go"}).id
    items = (await hub_reader(clients.readers, hub, cid, start)).items()
    waiting = asyncio.create_task(anext(items))
    await until(lambda: hub.reader_count() == 1)
    await until(lambda: shard_subscribers(redis_client, cid) == 1)
    waiting.cancel()  # what the server does when the client disconnects
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert hub.reader_count() == 0
    # The group without readers is unsubscribed, and its connection closed.
    await until(lambda: shard_subscribers(redis_client, cid) == 0)
    await until(lambda: hub.connection_count() == 0)


async def test_a_dropped_subscription_is_made_again_and_what_came_meanwhile_is_read(
    hub_alone: tuple[StreamHub, redis.Redis, _Clients],
) -> None:
    hub, redis_client, _ = hub_alone
    cid = new_conversation_id()
    log = run_log(redis_client, cid, "run")
    start = log.append(RUN_QUEUED, {"message": "go"}).id
    subscription, _ = hub.join(stream_key(cid), start)
    await until(lambda: shard_subscribers(redis_client, cid) == 1)
    log.append(MESSAGE_DELTA, {"text": "before"})
    await taken(subscription, 1)
    await until(lambda: hub.connection_count() == 1)  # the subscriber only: no read in flight
    # A dropped connection (a proxy, a token that expired): pub/sub forgets what it sent while
    # nobody listened, so the entry below reaches the hub only through the read that follows
    # the new subscription's confirmation.
    assert redis_client.client_kill_filter(_type="pubsub") == 1
    meanwhile = log.append(RUN_COMPLETED, {"finish_reason": "stop"}).id
    assert [e.id for e in await taken(subscription, 1)] == [meanwhile]
    assert shard_subscribers(redis_client, cid) == 1
    hub.leave(subscription)


async def reading_with_fallback(
    clients: _Clients, hub: StreamHub, cid: str, start: str
) -> asyncio.Task[list[Event]]:
    """A reader through the hub, as the app opens one (a blocking read of its own as fallback)."""
    opened = await open_stream(
        clients.readers,
        cid,
        Cursor(start),
        keepalive_seconds=15,
        max_seconds=60,
        hub=hub,
        fallback=clients.blocking,
    )
    return asyncio.create_task(events_of(opened))


async def test_a_redis_that_refuses_sharded_pub_sub_gets_a_blocking_read_per_reader(
    redis_port: int, redis_client: redis.Redis
) -> None:
    """What Redis 6 (no SSUBSCRIBE) does; here an ACL user that may not use it."""
    redis_client.acl_setuser(
        "no-sharded-pubsub",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-ssubscribe"],
    )
    settings = Settings.from_env(
        {"REDIS_CONNECTION_STRING": f"redis://no-sharded-pubsub:secret@127.0.0.1:{redis_port}"}
    )
    clients = _Clients(settings)
    hub = StreamHub(clients.hub, clients.hub_shards, queue_limit=500)
    try:
        cid = new_conversation_id()
        log = run_log(redis_client, cid, "run")
        start = log.append(RUN_QUEUED, {"message": "go"}).id
        reader = await reading_with_fallback(clients, hub, cid, start)
        await until(lambda: hub.unsupported)
        for i in range(3):
            log.append(MESSAGE_DELTA, {"text": f"{i}"})
        log.append(RUN_COMPLETED, {"finish_reason": "stop"})
        async with asyncio.timeout(60):
            assert await reader == expected_after(redis_client, cid, start)
    finally:
        await close_hub(hub, clients)
        redis_client.acl_deluser("no-sharded-pubsub")


@pytest.mark.slow  # an outage
async def test_readers_end_cleanly_when_the_hub_loses_redis() -> None:
    with running_redis_server() as port, redis.Redis(port=port, decode_responses=True) as client:
        hub, clients = make_hub(port, connections=2)
        cid = new_conversation_id()
        start = run_log(client, cid, "run").append(RUN_QUEUED, {"message": "go"}).id
        opened = await hub_reader(clients.readers, hub, cid, start)
        reader = asyncio.create_task(events_of(opened))
        await until(lambda: shard_subscribers(client, cid) == 1)
        client.shutdown(nosave=True)
        async with asyncio.timeout(60):
            assert await reader == []  # the response ends; the client resumes by cursor
        assert hub.reader_count() == 0
        await close_hub(hub, clients)


@contextmanager
def single_node_cluster() -> Iterator[int]:
    """A real redis-server in cluster mode owning every slot: multi-slot XREAD is CROSSSLOT."""
    port = free_port()
    while port + 10_000 > 65_535:  # the cluster bus listens on port + 10000
        port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
    cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    process = start_redis_server(port, workdir, cluster)
    try:
        with redis.Redis(port=port, decode_responses=True) as client:
            client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
            while client.cluster("info")["cluster_state"] != "ok":
                time.sleep(0.02)  # the server signals the slots' state only when asked
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow  # a cluster-mode redis-server of its own
async def test_a_plain_client_on_a_clustered_redis_is_served_by_the_hub() -> None:
    """A proxy-clustered Redis answers a plain client and refuses multi-slot commands: the hub
    sends none (one channel per SSUBSCRIBE, one group's streams per XREAD)."""
    with single_node_cluster() as port, redis.Redis(port=port, decode_responses=True) as client:
        hub, clients = make_hub(port, connections=2, cluster="false")
        cids = [new_conversation_id() for _ in range(6)]  # most likely of several groups
        logs = [run_log(client, cid, "run") for cid in cids]
        starts = [log.append(RUN_QUEUED, {"message": "go"}).id for log in logs]
        readers = []
        for cid, start in zip(cids, starts, strict=True):
            readers.append(await reading_with_fallback(clients, hub, cid, start))
        await until(lambda: hub.reader_count() == len(cids))
        for i in range(5):
            for log in logs:
                log.append(MESSAGE_DELTA, {"text": f"{i}"})
        for log in logs:
            log.append(RUN_COMPLETED, {"finish_reason": "stop"})
        async with asyncio.timeout(60):
            results = await asyncio.gather(*readers)
        for cid, start, got in zip(cids, starts, results, strict=True):
            assert got == expected_after(client, cid, start)
        assert not hub.unsupported
        names = [c["name"] for c in client.client_list()]
        assert "agentstream-blocking-readers" not in names
        await close_hub(hub, clients)


async def test_an_idle_hub_reader_ticks_at_the_keepalive_interval(
    redis_client: redis.Redis, aclient: aioredis.Redis, hub_factory: Callable[..., StreamHub]
) -> None:
    hub = hub_factory()
    cid = new_conversation_id()
    start = run_log(redis_client, cid, "run").append(RUN_QUEUED, {"message": "go"}).id
    opened = await open_stream(
        aclient, cid, Cursor(start), keepalive_seconds=0.02, max_seconds=60, hub=hub
    )
    items = opened.items()
    ticks = [await anext(items) for _ in range(3)]
    await items.aclose()
    assert ticks == [KEEPALIVE] * 3
    assert hub.reader_count() == 0


async def test_a_cursor_beyond_the_newest_event_is_refused(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    last = run_log(redis_client, cid, "run").append(RUN_QUEUED, {"message": "go"}).id
    ms, seq = last.split("-")
    for beyond in (f"{ms}-{int(seq) + 1}", f"{int(ms) + 1}-0"):
        with pytest.raises(CursorBeyondEnd):
            await open_stream(aclient, cid, Cursor(beyond), keepalive_seconds=1, max_seconds=1)
    # The newest event itself is a fine cursor: the reader waits for what comes next.
    await open_stream(aclient, cid, Cursor(last), keepalive_seconds=1, max_seconds=1)


async def test_stream_slots_are_taken_and_given_back(
    redis_client: redis.Redis, aclient: aioredis.Redis, hub_factory: Callable[..., StreamHub]
) -> None:
    hub, slots = hub_factory(), ReaderSlots(1)
    cid = new_conversation_id()
    log = run_log(redis_client, cid, "run")
    start = log.append(RUN_QUEUED, {"message": "go"}).id
    opened = await open_stream(
        aclient, cid, Cursor(start), keepalive_seconds=15, max_seconds=60, hub=hub, slots=slots
    )
    with pytest.raises(AtCapacity):
        await open_stream(
            aclient, cid, Cursor("0-0"), keepalive_seconds=1, max_seconds=1, slots=slots
        )
    log.append(RUN_COMPLETED, {"finish_reason": "stop"})
    assert [e.type for e in await events_of(opened)] == [RUN_COMPLETED]
    assert slots.in_use == 0
    # A stream opened and dropped without being read gives its slot back too.
    dropped = await open_stream(
        aclient, cid, Cursor("0-0"), keepalive_seconds=1, max_seconds=1, slots=slots
    )
    assert slots.in_use == 1
    del dropped
    assert slots.in_use == 0


async def test_an_exhausted_pool_is_at_capacity_and_other_pools_still_answer(
    redis_port: int, redis_client: redis.Redis
) -> None:
    settings = Settings.from_env(
        {
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "REDIS_MAX_CONNECTIONS": "1",
            "REDIS_POOL_TIMEOUT_SECONDS": "0.2",
        }
    )
    clients = _Clients(settings)
    try:
        holding = asyncio.create_task(clients.requests.blpop(["never-written"], timeout=30))
        await until(lambda: redis_client.info("clients")["blocked_clients"] == 1)
        with pytest.raises(AtCapacity):
            await clients.requests.ping()
        assert await clients.readers.ping()
        assert await clients.hub.ping()
        holding.cancel()
    finally:
        for client in (clients.requests, clients.readers, clients.hub, clients.blocking):
            await client.aclose()


def test_pool_settings_have_small_defaults_and_errors_name_the_setting() -> None:
    pools = Settings.from_env({}).pools
    assert (pools.hub, pools.hub_connections, pools.catch_up_connections) == (True, 4, 2)
    assert pools.request_connections == 16 and pools.max_readers == 2000
    assert Settings.from_env({"STREAM_HUB": "off"}).pools.hub is False
    for name in ("REDIS_MAX_CONNECTIONS", "STREAM_HUB_CONNECTIONS", "STREAM_READER_QUEUE"):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: "0"})
    # One subscriber and at least one reading connection.
    with pytest.raises(ConfigError, match="STREAM_HUB_CONNECTIONS must be at least 2"):
        Settings.from_env({"STREAM_HUB_CONNECTIONS": "1"})
    with pytest.raises(ConfigError, match="STREAM_HUB"):
        Settings.from_env({"STREAM_HUB": "maybe"})
