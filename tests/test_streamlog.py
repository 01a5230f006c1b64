"""The Redis stream log against a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from agentstream.events import (
    MESSAGE_DELTA,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_STARTED,
    TOOL_CALL,
)
from agentstream.failures import RunAlreadyFinished, RunCancelled, RunFailure
from agentstream.streamlog.control import Limits, start_run
from agentstream.streamlog.cursor import Cursor, MalformedCursor, parse_cursor
from agentstream.streamlog.keys import meta_key, stream_id_before, stream_key
from agentstream.streamlog.reader import (
    ConversationNotFound,
    CursorTrimmed,
    NothingToDeliver,
    open_stream,
)
from agentstream.streamlog.writer import terminal_guard

from .streamlog_helpers import (
    collect,
    new_conversation_id,
    queued_run_log,
    run_log,
    stream_writer,
)


def write_finished_run(
    client: redis.Redis, cid: str, run_id: str = "run1", deltas: int = 8
) -> None:
    log = run_log(client, cid, run_id)
    log.append(RUN_QUEUED, {"message": "hi"})
    writer = stream_writer(log, flush_chars=1)
    with terminal_guard(writer):
        writer.event(RUN_STARTED, {"attempt": 1})
        for i in range(deltas):
            writer.text(f"part {i}\n")
        writer.event(TOOL_CALL, {"call_id": "c1", "name": "t", "arguments": "{}"})
        writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": {}})


async def test_resuming_at_every_cursor_yields_exactly_the_events_after_it(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    write_finished_run(redis_client, cid)
    everything = await collect(aclient, cid, Cursor("0-0"))
    assert [e.seq for e in everything] == list(range(len(everything)))
    assert everything[-1].type == RUN_COMPLETED
    for index, event in enumerate(everything[:-1]):
        resumed = await collect(aclient, cid, Cursor(event.id), batch_size=3)
        assert resumed == everything[index + 1 :]
    with pytest.raises(NothingToDeliver):
        await open_stream(
            aclient, cid, Cursor(everything[-1].id), keepalive_seconds=1, max_seconds=1
        )


async def test_live_reader_and_late_reader_see_identical_sequences(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    log = run_log(redis_client, cid, "run1")
    log.append(RUN_QUEUED, {"message": "hi"})
    live = asyncio.create_task(collect(aclient, cid, Cursor(None)))

    def write_rest() -> None:
        writer = stream_writer(log, flush_chars=5)
        with terminal_guard(writer):
            writer.event(RUN_STARTED, {"attempt": 1})
            for word in ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"):
                writer.text(word + " ")
            writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})

    await asyncio.to_thread(write_rest)
    live_events = await live
    late_events = await collect(aclient, cid, Cursor(None))
    assert live_events == late_events
    assert live_events[0].type == RUN_QUEUED and live_events[-1].type == RUN_COMPLETED
    text = "".join(e.data["text"] for e in live_events if e.type == MESSAGE_DELTA)
    assert text == "the quick brown fox jumps over the lazy dog "


async def test_no_cursor_starts_at_the_latest_run(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    write_finished_run(redis_client, cid, "first")
    started = await start_run(
        aclient,
        cid,
        "second",
        "again",
        idempotency_key=None,
        must_exist=False,
        limits=Limits(ttl_seconds=600, maxlen=1000),
    )
    assert started.outcome == "started"
    run_log(redis_client, cid, "second").append(RUN_CANCELLED, {})
    events = await collect(aclient, cid, Cursor(None))
    assert [(e.run, e.type) for e in events] == [("second", RUN_QUEUED), ("second", RUN_CANCELLED)]


async def test_idle_reader_blocks_instead_of_polling(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    log = run_log(redis_client, cid, "run1")
    log.append(RUN_QUEUED, {"message": "hi"})
    reader = asyncio.create_task(collect(aclient, cid, Cursor(None), keepalive_seconds=10))
    await _until_blocked(redis_client, clients=1)
    redis_client.config_resetstat()
    await asyncio.sleep(1.0)  # the measurement window, not synchronisation
    stats = redis_client.info("commandstats")
    xread_calls = stats.get("cmdstat_xread", {}).get("calls", 0)
    assert xread_calls == 0, f"an idle reader issued {xread_calls} XREADs in one second"
    log.append(RUN_CANCELLED, {})
    events = await reader
    assert [e.type for e in events] == [RUN_QUEUED, RUN_CANCELLED]


async def test_keepalive_ticks_while_idle_and_the_maximum_duration_ends_the_response(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    run_log(redis_client, cid, "run1").append(RUN_QUEUED, {"message": "hi"})
    opened = await open_stream(aclient, cid, Cursor(None), keepalive_seconds=0.05, max_seconds=0.5)
    items = [item async for item in opened.items()]
    assert items[0] is not None and items[0].type == RUN_QUEUED
    assert len(items) >= 3 and all(item is None for item in items[1:])


async def test_every_write_refreshes_the_ttl_and_an_expired_stream_is_unknown(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    log = run_log(redis_client, cid, "run1", ttl_seconds=120)
    log.append(RUN_QUEUED, {"message": "hi"})
    for key in (stream_key(cid), meta_key(cid)):
        redis_client.pexpire(key, 5_000)
    log.append(RUN_STARTED, {"attempt": 1})
    for key in (stream_key(cid), meta_key(cid)):
        assert redis_client.pttl(key) > 100_000
    redis_client.pexpire(stream_key(cid), 1)
    redis_client.pexpire(meta_key(cid), 1)
    await _until_gone(redis_client, stream_key(cid))
    with pytest.raises(ConversationNotFound):
        await open_stream(aclient, cid, Cursor(None), keepalive_seconds=1, max_seconds=1)
    with pytest.raises(ConversationNotFound):
        await open_stream(
            aclient, new_conversation_id(), Cursor("0-0"), keepalive_seconds=1, max_seconds=1
        )


async def test_trimmed_history_is_reported_not_skipped(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    redis_client.config_set("stream-node-max-entries", 4)
    cid = new_conversation_id()
    log = run_log(redis_client, cid, "run1", maxlen=8)
    first = log.append(RUN_QUEUED, {"message": "hi"})
    for _ in range(40):
        log.append(MESSAGE_DELTA, {"text": "x"})
    assert redis_client.xlen(stream_key(cid)) < 41
    for cursor in (Cursor("0-0"), Cursor(first.id), Cursor(None)):
        with pytest.raises(CursorTrimmed):
            await open_stream(aclient, cid, cursor, keepalive_seconds=1, max_seconds=1)
    oldest = redis_client.xrange(stream_key(cid), count=1)[0][0]
    log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    events = await collect(aclient, cid, Cursor(stream_id_before(oldest)))
    assert events[0].id == oldest and events[-1].type == RUN_COMPLETED


def test_body_that_raises_ends_with_run_failed(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    writer = stream_writer(queued_run_log(redis_client, cid, "run1"), flush_chars=1000)
    with terminal_guard(writer):
        writer.event(RUN_STARTED, {"attempt": 1})
        writer.text("half an answ")
        raise KeyError("secret-api-key-in-exception-text")
    entries = redis_client.xrange(stream_key(cid))
    assert [fields["type"] for _, fields in entries] == [RUN_QUEUED, RUN_STARTED, RUN_FAILED]
    assert "secret" not in entries[-1][1]["data"]
    assert '"code":"internal_error"' in entries[-1][1]["data"]


def test_typed_failure_keeps_its_code_and_a_second_terminal_is_refused(
    redis_client: redis.Redis,
) -> None:
    cid = new_conversation_id()
    log = queued_run_log(redis_client, cid, "run1")
    with terminal_guard(stream_writer(log)):
        raise RunFailure("model_timeout", "The model did not answer in time.")
    with pytest.raises(RunAlreadyFinished):
        log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    with terminal_guard(stream_writer(log)) as writer:
        writer.event(RUN_STARTED, {"attempt": 2})
    types = [fields["type"] for _, fields in redis_client.xrange(stream_key(cid))]
    assert types == [RUN_QUEUED, RUN_FAILED]
    assert redis_client.hget(meta_key(cid), "status:run1") == "failed"


def test_a_body_that_forgets_the_terminal_event_still_gets_one(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    with terminal_guard(stream_writer(queued_run_log(redis_client, cid, "run1"))) as writer:
        writer.text("done?")
    types = [fields["type"] for _, fields in redis_client.xrange(stream_key(cid))]
    assert types == [RUN_QUEUED, RUN_FAILED]


def test_cancel_flag_is_seen_by_the_writer(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    log = run_log(redis_client, cid, "run1")
    log.append(RUN_QUEUED, {"message": "hi"})
    writer = stream_writer(log, flush_chars=1)
    written = 0
    with terminal_guard(writer):
        writer.event(RUN_STARTED, {"attempt": 1})
        redis_client.hset(meta_key(cid), "cancel:run1", "1")
        for _ in range(100):
            writer.text("more ")
            written += 1
    assert written == 0, "the writer must stop the body at the first write after the cancel"
    types = [fields["type"] for _, fields in redis_client.xrange(stream_key(cid))]
    assert types == [RUN_QUEUED, RUN_STARTED, MESSAGE_DELTA, RUN_CANCELLED]
    assert isinstance(RunCancelled(), Exception)


def test_seq_has_no_gaps_across_attempts(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    first_attempt = run_log(redis_client, cid, "run1")
    first_attempt.append(RUN_QUEUED, {"message": "hi"})
    first_attempt.append(RUN_STARTED, {"attempt": 1})
    second_attempt = run_log(redis_client, cid, "run1")
    second_attempt.append(RUN_STARTED, {"attempt": 2})
    seqs = [int(fields["seq"]) for _, fields in redis_client.xrange(stream_key(cid))]
    assert seqs == [0, 1, 2]


def test_deltas_coalesce_by_size_and_lose_nothing(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    log = queued_run_log(redis_client, cid, "run1")
    writer = stream_writer(log, flush_chars=64, flush_ms=60_000)
    pieces = [f"tok{i} " for i in range(200)]
    with terminal_guard(writer):
        for piece in pieces:
            writer.text(piece)
        writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    entries = [fields for _, fields in redis_client.xrange(stream_key(cid))]
    deltas = [f for f in entries if f["type"] == MESSAGE_DELTA]
    assert len(deltas) < len(pieces) / 5
    import json

    assert "".join(json.loads(f["data"])["text"] for f in deltas) == "".join(pieces)


def test_deltas_flush_by_age() -> None:
    from agentstream.streamlog.writer import StreamWriter

    written: list[tuple[str, dict]] = []

    class RecordingLog:
        run_id = "r"

        def append(self, event_type: str, data: dict, turn=None):  # RunLog is tested above
            written.append((event_type, data))
            from agentstream.streamlog.runlog import Appended

            return Appended(id="1-0", seq=len(written), cancel_requested=False)

    now = [0.0]
    writer = StreamWriter(RecordingLog(), flush_chars=1000, flush_ms=25, clock=lambda: now[0])
    writer.text("a")
    now[0] = 0.010
    writer.text("b")
    assert written == []
    now[0] = 0.030
    writer.text("c")
    assert written == [(MESSAGE_DELTA, {"text": "abc"})]
    writer.text("d")
    writer.flush_if_due()
    assert len(written) == 1  # not yet due
    now[0] = 0.060
    writer.flush_if_due()  # no new delta needed
    assert written[-1] == (MESSAGE_DELTA, {"text": "d"})


@pytest.mark.parametrize("raw", ["abc", "12-", "-1", "1-2-3", "１-2", "99999999999999999999999-0"])
def test_malformed_cursors_are_rejected(raw: str) -> None:
    with pytest.raises(MalformedCursor):
        parse_cursor(raw, None)


def test_last_event_id_wins_over_the_query() -> None:
    assert parse_cursor("1-1", "2-2") == Cursor("2-2")
    assert parse_cursor("1-1", None) == Cursor("1-1")
    assert parse_cursor("0", None) == Cursor("0-0")
    assert parse_cursor(None, None) == Cursor(None)
    assert parse_cursor("", "") == Cursor(None)


def test_stream_id_before() -> None:
    assert stream_id_before("5-3") == "5-2"
    assert stream_id_before("5-0") == "4-18446744073709551615"
    assert stream_id_before("0-0") == "0-0"


async def _until_blocked(client: redis.Redis, clients: int) -> None:
    deadline = time.monotonic() + 5
    while client.info("clients")["blocked_clients"] < clients:
        assert time.monotonic() < deadline, "the reader never blocked"
        await asyncio.sleep(0.01)


async def _until_gone(client: redis.Redis, key: str) -> None:
    deadline = time.monotonic() + 5
    while client.exists(key):
        assert time.monotonic() < deadline, "the key never expired"
        await asyncio.sleep(0.01)
