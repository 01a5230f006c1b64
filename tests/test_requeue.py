"""When the entity writes a run missing from Redis again from its signal, and when it must not.

The state a promoted replica holds after losing a ``START`` is the state before that ``START``:
each test saves the conversation's keys (``DUMP``), runs ``START``, and puts the saved keys back
(``RESTORE``), on a real ``redis-server``. The failover itself is in tests/test_failover_start.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
import redis
import redis.asyncio as aioredis

from agentstream.events import RUN_COMPLETED
from agentstream.streamlog import control
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.keys import conversation_keys, meta_key, stream_key
from agentstream.streamlog.reader import CursorBeyondEnd, open_stream
from agentstream.streamlog.requeue import QueuedRun, Requeue
from agentstream.streamlog.runlog import RunLog

from .streamlog_helpers import new_conversation_id

LIMITS = control.Limits(ttl_seconds=600, maxlen=10_000, start_deadline_seconds=300)
DEADLINE_MS = 300_000


def start(client: redis.Redis, cid: str, message: str, *, key: str = "", new: bool = True):
    async def call() -> control.RunStart:
        port = client.connection_pool.connection_kwargs["port"]
        aclient = aioredis.Redis(port=port, decode_responses=True)
        try:
            return await control.start_run(
                aclient,
                cid,
                uuid.uuid4().hex,
                message,
                idempotency_key=key or None,
                must_exist=not new,
                limits=LIMITS,
                owner="alice",
            )
        finally:
            await aclient.aclose()

    started = asyncio.run(call())
    assert started.outcome == "started" and started.queued is not None
    return started


def lost_start(client: redis.Redis, cid: str, message: str, **kwargs) -> control.RunStart:
    """A START whose writes the Redis then forgets: its keys are put back as they were."""
    saved = {key: client.dump(key) for key in conversation_keys(cid)}
    started = start(client, cid, message, **kwargs)
    client.delete(*conversation_keys(cid))
    for key, value in saved.items():
        if value is not None:
            client.restore(key, 0, value)
    return started


def log_for(client: redis.Redis, cid: str, started: control.RunStart, queued: QueuedRun, message):
    assert started.run_id is not None
    requeue = Requeue(queued, message, "travelplanner", 86_400_000, DEADLINE_MS, 86_400_000)
    return RunLog(client, cid, started.run_id, ttl_seconds=600, maxlen=10_000, requeue=requeue)


def test_a_lost_run_is_queued_again_with_its_ids_key_and_owner(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    started = lost_start(redis_client, cid, "Plan Porto", key="k1")
    assert not redis_client.exists(stream_key(cid))
    assert started.queued is not None
    log = log_for(redis_client, cid, started, started.queued, "Plan Porto")
    assert log.begin("delivery").outcome == "begun"
    [(entry_id, fields)] = redis_client.xrange(stream_key(cid))
    assert entry_id == started.cursor
    assert fields["type"] == "run.queued" and fields["run"] == started.run_id
    assert fields["seq"] == "0" and fields["ts"] == str(started.queued.ts)
    meta = redis_client.hgetall(meta_key(cid))
    assert meta["idem:k1"].split()[:2] == [started.run_id, started.cursor]
    assert meta["latest_start"] == started.cursor and meta["active_run"] == started.run_id
    record = redis_client.hgetall(conversation_keys(cid)[2])
    assert (record["owner"], record["agent"]) == ("alice", "travelplanner")
    # The next append continues at seq 1: readers of the 202's cursor see no gap.
    assert log.append("run.started", {"attempt": 1}).seq == 1


def test_a_redelivered_signal_of_a_finished_run_writes_nothing(
    redis_client: redis.Redis,
) -> None:
    cid = new_conversation_id()
    started = start(redis_client, cid, "hi")
    assert started.queued is not None
    log = log_for(redis_client, cid, started, started.queued, "hi")
    assert log.begin("first").outcome == "begun"
    log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    entries = redis_client.xlen(stream_key(cid))
    again = log_for(redis_client, cid, started, started.queued, "hi").begin("second")
    assert (again.outcome, again.status) == ("finished", "completed")
    assert redis_client.xlen(stream_key(cid)) == entries


def test_a_run_of_a_deleted_conversation_is_not_brought_back(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    started = start(redis_client, cid, "hi")
    assert started.queued is not None

    async def delete() -> bool:
        port = redis_client.connection_pool.connection_kwargs["port"]
        async with aioredis.Redis(port=port, decode_responses=True) as aclient:
            return await control.delete_conversation(aclient, cid, LIMITS)

    assert asyncio.run(delete())
    log = log_for(redis_client, cid, started, started.queued, "hi")
    assert log.begin("delivery").outcome == "unknown"
    assert not redis_client.exists(*conversation_keys(cid))


def test_a_run_older_than_the_start_deadline_is_not_queued_again(
    redis_client: redis.Redis,
) -> None:
    cid = new_conversation_id()
    started = lost_start(redis_client, cid, "hi")
    assert started.queued is not None
    ms = int(started.queued.id.split("-")[0])
    old = dataclasses.replace(started.queued, id=f"{ms - DEADLINE_MS - 1000}-0")
    assert log_for(redis_client, cid, started, old, "hi").begin("delivery").outcome == "unknown"
    assert not redis_client.exists(stream_key(cid))


def test_a_lost_run_the_conversation_moved_past_is_not_queued_again(
    redis_client: redis.Redis,
) -> None:
    cid = new_conversation_id()
    lost = lost_start(redis_client, cid, "first", key="k1")
    later = start(redis_client, cid, "second", key="k2")
    assert lost.queued is not None
    log = log_for(redis_client, cid, lost, lost.queued, "first")
    assert log.begin("delivery").outcome == "unknown"
    assert [f["run"] for _, f in redis_client.xrange(stream_key(cid))] == [later.run_id]
    assert redis_client.hget(meta_key(cid), "active_run") == later.run_id


def test_a_follow_up_of_a_conversation_that_is_gone_is_not_queued_again(
    redis_client: redis.Redis,
) -> None:
    cid = new_conversation_id()
    started = start(redis_client, cid, "hi")
    assert started.queued is not None
    follow_up = dataclasses.replace(started.queued, new=False)
    redis_client.delete(*conversation_keys(cid))  # expired, record and all
    log = log_for(redis_client, cid, started, follow_up, "hi")
    assert log.begin("delivery").outcome == "unknown"
    assert not redis_client.exists(*conversation_keys(cid))


async def test_a_recent_cursor_beyond_the_end_waits_and_an_old_one_is_refused(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    started = await control.start_run(
        aclient, cid, "run", "hi", idempotency_key=None, must_exist=False, limits=LIMITS
    )
    assert started.queued is not None
    log = log_for(redis_client, cid, started, started.queued, "hi")
    log.begin("delivery")
    last = log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None}).id
    ms = int(last.split("-")[0])
    recent, old = Cursor(f"{ms + 1}-0"), Cursor(f"{ms + 1 - 400_000}-0")
    with pytest.raises(CursorBeyondEnd):
        await open_stream(aclient, cid, recent, keepalive_seconds=1, max_seconds=1)
    # A lost run.queued there may still be written again by its entity: the read waits.
    opened = await open_stream(
        aclient, cid, recent, keepalive_seconds=1, max_seconds=1, requeue_window_seconds=300
    )
    assert opened.after_id == recent.value
    # The old cursor is before the end here; one before the start deadline beyond the end of an
    # older stream is refused the same way as without the window.
    redis_client.delete(stream_key(cid))
    redis_client.xadd(
        stream_key(cid),
        {"type": RUN_COMPLETED, "run": "r", "seq": 0, "ts": 1, "data": "{}"},
        id="1-0",
    )
    with pytest.raises(CursorBeyondEnd):
        await open_stream(
            aclient, cid, old, keepalive_seconds=1, max_seconds=1, requeue_window_seconds=300
        )
