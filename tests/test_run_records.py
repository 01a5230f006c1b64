"""The run record: written by the script that appends a run's terminal event, it holds the run's
result after the stream is gone. Real Redis, the real scripts."""

from __future__ import annotations

import uuid

import redis
import redis.asyncio as aioredis

from agentstream.api.responses.translate import ResponseMeta, recorded_response, translate
from agentstream.events import (
    MESSAGE_DELTA,
    RUN_COMPLETED,
    RUN_RESTARTED,
    RUN_STARTED,
    TOOL_CALL,
    TOOL_RESULT,
    Event,
)
from agentstream.streamlog import control, run_records
from agentstream.streamlog.keys import run_records_key, stream_key

from .streamlog_helpers import new_conversation_id, run_log

LIMITS = control.Limits(ttl_seconds=600, maxlen=10_000, run_record_ttl_seconds=7 * 86_400)


async def start(client: aioredis.Redis, cid: str, limits: control.Limits = LIMITS) -> str:
    started = await control.start_run(
        client, cid, uuid.uuid4().hex, "hi", idempotency_key=None, must_exist=False, limits=limits
    )
    assert started.outcome == "started" and started.run_id is not None
    return started.run_id


def stream_events(client: redis.Redis, cid: str, run_id: str) -> list[Event]:
    return [
        event
        for event in (Event.from_entry(i, f) for i, f in client.xrange(stream_key(cid)))
        if event.run == run_id
    ]


async def test_the_record_gives_the_same_response_as_the_runs_events(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    run_id = await start(aclient, cid)
    crashed = run_log(redis_client, cid, run_id)
    crashed.begin("first-delivery")
    crashed.append(RUN_STARTED, {"attempt": 1})
    for text in ("Let me ", "", "look \U0001f600", ' \u2028/"x","y'):
        crashed.append(MESSAGE_DELTA, {"text": text})
    crashed.append(MESSAGE_DELTA, {"text": " more", "extra": "a field"})  # not the writer's shape
    crashed.append(TOOL_CALL, {"call_id": "c1", "name": "get_weather", "arguments": "{}"})
    crashed.append(TOOL_RESULT, {"call_id": "c1", "result": "sunny"})
    crashed.append(MESSAGE_DELTA, {"text": "It is sun"})
    crashed.append(TOOL_CALL, {"call_id": "c2", "name": "get_events", "arguments": "{}"})
    again = run_log(redis_client, cid, run_id)
    again.begin("second-delivery")
    again.append(RUN_RESTARTED, {"attempt": 2})
    again.append(RUN_STARTED, {"attempt": 2})
    for text in ("Sunny ", "all ", "day."):
        again.append(MESSAGE_DELTA, {"text": text})
    assert not redis_client.exists(run_records_key(cid))  # only the terminal event writes it
    usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    again.append(RUN_COMPLETED, {"usage": usage}, turn=[{"role": "assistant"}])

    record = await run_records.load(aclient, cid, run_id)
    assert record is not None and record.status == "completed"
    meta = ResponseMeta(run_id, cid, "travelplanner", background=True)
    events = stream_events(redis_client, cid, run_id)
    assert record.start_id == events[0].id
    expected = translate(meta, events)[1].response()
    assert recorded_response(meta, record) == expected
    first_text = expected["output"][0]["content"][0]["text"]
    assert first_text == 'Let me look \U0001f600 \u2028/"x","y more'
    # Each stretch of text is one delta in the record: 3 stretches of 10 deltas.
    assert [e.type for e in record.events].count(MESSAGE_DELTA) == 3
    ttl_ms = redis_client.pttl(run_records_key(cid))
    assert LIMITS.ttl_seconds * 1000 < ttl_ms <= LIMITS.run_record_ttl_seconds * 1000


async def test_a_run_ended_by_a_cancel_of_a_dead_start_has_its_record(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    limits = control.Limits(ttl_seconds=600, maxlen=10_000, start_deadline_seconds=0.001)
    run_id = await start(aclient, cid, limits)
    # The start deadline passes on Redis's clock; the cancel that meets it ends the run itself.
    while await control.request_cancel(aclient, cid, run_id, limits) != "ended":
        pass
    record = await run_records.load(aclient, cid, run_id)
    assert record is not None
    assert (record.status, [e.type for e in record.events]) == (
        "cancelled",
        ["run.queued", "run.cancelled"],
    )


async def test_a_conversation_keeps_the_records_of_its_newest_runs_only(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    limits = control.Limits(ttl_seconds=600, maxlen=10_000, runs_kept=3)
    runs = []
    for n in range(5):
        run_id = await start(aclient, cid, limits)
        log = run_log(redis_client, cid, run_id)
        log.begin(f"delivery-{n}")
        log.append(RUN_COMPLETED, {})
        runs.append(run_id)
    kept = redis_client.hgetall(run_records_key(cid))
    assert set(kept) == {*runs[-3:], "runs"}
    assert kept["runs"].split() == runs[-3:]


async def test_a_run_whose_start_was_trimmed_away_gets_no_record(
    redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    cid = new_conversation_id()
    run_id = await start(aclient, cid)
    log = run_log(redis_client, cid, run_id)
    log.begin("delivery")
    log.append(MESSAGE_DELTA, {"text": "partial"})
    redis_client.xtrim(stream_key(cid), maxlen=1, approximate=False)
    log.append(RUN_COMPLETED, {})
    assert await run_records.load(aclient, cid, run_id) is None
