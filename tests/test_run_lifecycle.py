"""Every run ends: idempotent retried appends, attempt fencing, leases, turn recovery.

Real redis-server processes throughout: replies lost by a proxy after Redis executed the command,
and leases that run out on Redis's own clock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from agentstream.config import Settings
from agentstream.conversation import ConversationState, bounded_history, run
from agentstream.events import MESSAGE_DELTA, RUN_COMPLETED, RUN_STARTED
from agentstream.failures import RunAlreadyFinished
from agentstream.model_client import create_model_client
from agentstream.streamlog import control
from agentstream.streamlog.keys import meta_key, stream_key
from agentstream.streamlog.retry import StoreUnavailable
from agentstream.streamlog.runlog import RunLog
from agentstream.streamlog.writer import StreamWriter, terminal_guard
from agentstream_dev.scripted_model.server import create_app as create_model_app
from agentstream_examples.travel_planner import travel_planner

from .redis_proxy import reply_dropping_proxy
from .standins import scripted_services
from .streamlog_helpers import new_conversation_id

LIMITS = control.Limits(ttl_seconds=600, maxlen=10_000, start_deadline_seconds=300)


def queue(client: redis.Redis, cid: str, message: str = "hi", **limits: Any) -> str:
    """Start a run the way the HTTP function does; return its id."""
    run_id = uuid.uuid4().hex

    async def start() -> control.RunStart:
        aclient = aioredis.Redis(
            port=client.connection_pool.connection_kwargs["port"], decode_responses=True
        )
        try:
            return await control.start_run(
                aclient,
                cid,
                run_id,
                message,
                idempotency_key=None,
                must_exist=False,
                limits=control.Limits(**{**LIMITS.__dict__, **limits}),
            )
        finally:
            await aclient.aclose()

    assert asyncio.run(start()).outcome == "started"
    return run_id


def log_for(client: redis.Redis, cid: str, run_id: str, **kwargs: Any) -> RunLog:
    return RunLog(
        client, cid, run_id, ttl_seconds=600, maxlen=10_000, **{"retry_seconds": 5.0, **kwargs}
    )


def entries(client: redis.Redis, cid: str) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(stream_key(cid))]


def test_a_reply_lost_after_redis_appended_does_not_duplicate_the_entry(
    redis_client: redis.Redis, redis_port: int
) -> None:
    cid = new_conversation_id()
    run_id = queue(redis_client, cid)
    with reply_dropping_proxy(redis_port) as proxy:
        through_proxy = redis.Redis(port=proxy.port, decode_responses=True)
        log = log_for(through_proxy, cid, run_id)
        assert log.begin("delivery-1").attempt == 1
        log.append(RUN_STARTED, {"attempt": 1})
        proxy.drop_reply_to(b"message.delta")
        appended = log.append(MESSAGE_DELTA, {"text": "written once"})
        assert proxy.dropped == 1, "the proxy must have cut the connection after Redis answered"
        log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
        through_proxy.close()
    written = entries(redis_client, cid)
    assert [e["type"] for e in written] == ["run.queued", RUN_STARTED, MESSAGE_DELTA, RUN_COMPLETED]
    assert [int(e["seq"]) for e in written] == [0, 1, 2, 3]
    delta_id = redis_client.xrange(stream_key(cid))[2][0]
    assert appended.id == delta_id and appended.seq == 2


def test_a_lost_reply_to_begin_counts_the_attempt_once(
    redis_client: redis.Redis, redis_port: int
) -> None:
    cid = new_conversation_id()
    run_id = queue(redis_client, cid)
    with reply_dropping_proxy(redis_port) as proxy:
        through_proxy = redis.Redis(port=proxy.port, decode_responses=True)
        proxy.drop_reply_to(b"delivery-1")
        assert log_for(through_proxy, cid, run_id).begin("delivery-1").attempt == 1
        assert proxy.dropped == 1
        through_proxy.close()
    assert redis_client.hget(meta_key(cid), f"attempts:{run_id}") == "1"


def test_an_older_attempt_cannot_write_once_a_newer_one_began(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    run_id = queue(redis_client, cid)
    zombie = log_for(redis_client, cid, run_id)
    assert zombie.begin("first-delivery").attempt == 1
    zombie.append(RUN_STARTED, {"attempt": 1})
    newer = log_for(redis_client, cid, run_id)
    assert newer.begin("redelivery").attempt == 2
    with pytest.raises(RunAlreadyFinished, match="fenced"):
        zombie.append(MESSAGE_DELTA, {"text": "from a worker that was given up on"})
    with pytest.raises(RunAlreadyFinished):
        zombie.heartbeat()
    newer.append(RUN_STARTED, {"attempt": 2})
    newer.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    assert [e["type"] for e in entries(redis_client, cid)] == [
        "run.queued",
        RUN_STARTED,
        RUN_STARTED,
        RUN_COMPLETED,
    ]


@pytest.mark.slow  # waits out the retry budget
def test_a_writer_whose_redis_is_gone_gives_up_after_its_budget(redis_client: redis.Redis) -> None:
    from .redis_server import free_port

    with redis.Redis(port=free_port(), socket_connect_timeout=0.2) as nowhere:
        log = log_for(nowhere, new_conversation_id(), "r" * 32, retry_seconds=0.3)
        with pytest.raises(StoreUnavailable):
            log.begin("delivery")


def test_a_stale_running_run_is_ended_by_the_next_request_and_its_late_writes_are_refused(
    redis_client: redis.Redis, redis_port: int
) -> None:
    cid = new_conversation_id()
    run_id = queue(redis_client, cid)
    crashed = log_for(redis_client, cid, run_id, lease_seconds=0.05)
    crashed.begin("delivery")
    crashed.append(RUN_STARTED, {"attempt": 1})
    lease_end = int(redis_client.hget(meta_key(cid), f"lease:{run_id}"))
    _wait_for_redis_clock(redis_client, lease_end)

    async def next_request() -> tuple[bool, control.RunStart]:
        aclient = aioredis.Redis(port=redis_port, decode_responses=True)
        try:
            alive = await control.end_stale_run(aclient, cid, LIMITS)
            again = await control.start_run(
                aclient,
                cid,
                uuid.uuid4().hex,
                "next",
                idempotency_key=None,
                must_exist=False,
                limits=LIMITS,
            )
            return alive, again
        finally:
            await aclient.aclose()

    alive, again = asyncio.run(next_request())
    assert alive and again.outcome == "started"
    written = entries(redis_client, cid)
    assert [e["type"] for e in written] == ["run.queued", RUN_STARTED, "run.failed", "run.queued"]
    assert '"code":"worker_lost"' in written[2]["data"]
    with pytest.raises(RunAlreadyFinished, match="finished"):
        crashed.append(MESSAGE_DELTA, {"text": "late"})
    assert len(entries(redis_client, cid)) == 4


def test_a_queued_run_past_its_start_deadline_fails_as_not_started(
    redis_client: redis.Redis, redis_port: int
) -> None:
    cid = new_conversation_id()
    run_id = queue(redis_client, cid, start_deadline_seconds=0.05)
    _wait_for_redis_clock(redis_client, int(redis_client.hget(meta_key(cid), f"deadline:{run_id}")))

    async def status() -> dict[str, Any] | None:
        aclient = aioredis.Redis(port=redis_port, decode_responses=True)
        try:
            return await control.conversation_status(aclient, cid, LIMITS)
        finally:
            await aclient.aclose()

    found = asyncio.run(status())
    assert found is not None and found["active_run"] is None
    assert found["runs"][0]["status"] == "failed"
    assert '"code":"not_started"' in entries(redis_client, cid)[-1]["data"]
    # The late delivery of that run writes nothing.
    assert log_for(redis_client, cid, run_id).begin("late").outcome == "finished"


def test_cancelling_a_run_whose_worker_is_gone_ends_it_at_once(
    redis_client: redis.Redis, redis_port: int
) -> None:
    cid = new_conversation_id()
    run_id = queue(redis_client, cid)
    crashed = log_for(redis_client, cid, run_id, lease_seconds=0.05)
    crashed.begin("delivery")
    _wait_for_redis_clock(redis_client, int(redis_client.hget(meta_key(cid), f"lease:{run_id}")))

    async def cancel() -> str | None:
        aclient = aioredis.Redis(port=redis_port, decode_responses=True)
        try:
            return await control.request_cancel(aclient, cid, run_id, LIMITS)
        finally:
            await aclient.aclose()

    assert asyncio.run(cancel()) == "ended"
    assert entries(redis_client, cid)[-1]["type"] == "run.cancelled"
    assert redis_client.hget(meta_key(cid), "active_run") is None


def test_a_heartbeat_keeps_a_slow_run_alive(redis_client: redis.Redis, redis_port: int) -> None:
    cid = new_conversation_id()
    run_id = queue(redis_client, cid)
    log = log_for(redis_client, cid, run_id, lease_seconds=0.3)
    log.begin("delivery")
    writer = StreamWriter(log, flush_chars=64, flush_ms=25, heartbeat_seconds=0.1)
    with writer.pacing(), terminal_guard(writer):
        writer.event(RUN_STARTED, {"attempt": 1})
        first_lease = int(redis_client.hget(meta_key(cid), f"lease:{run_id}"))
        # A slow model: nothing is written until the lease the last write took has run out.
        _wait_for_redis_clock(redis_client, first_lease)
        assert asyncio.run(_reap(redis_port, cid))
        assert int(redis_client.hget(meta_key(cid), f"lease:{run_id}")) > first_lease
        writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})
    types = [e["type"] for e in entries(redis_client, cid)]
    assert types == ["run.queued", RUN_STARTED, RUN_COMPLETED], "the live run must not be ended"


def test_buffered_text_goes_out_by_age_while_the_model_pauses(redis_client: redis.Redis) -> None:
    cid = new_conversation_id()
    run_id = queue(redis_client, cid)
    log = log_for(redis_client, cid, run_id)
    log.begin("delivery")
    writer = StreamWriter(log, flush_chars=1000, flush_ms=20)
    with writer.pacing(), terminal_guard(writer):
        writer.text("Day 1: ")
        # No further token arrives; the pacer must flush on its own.
        deadline = time.monotonic() + 30
        while len(entries(redis_client, cid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)  # waiting on another thread's Redis write; nothing to await
        assert [e["type"] for e in entries(redis_client, cid)] == ["run.queued", MESSAGE_DELTA]
        writer.finish(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})


async def _reap(redis_port: int, cid: str) -> bool:
    aclient = aioredis.Redis(port=redis_port, decode_responses=True)
    try:
        return await control.end_stale_run(aclient, cid, LIMITS)
    finally:
        await aclient.aclose()


def _wait_for_redis_clock(client: redis.Redis, past_ms: int) -> None:
    """Wait until Redis's own clock (which leases use) is past ``past_ms``."""
    deadline = time.monotonic() + 30
    while True:
        seconds, micros = client.time()
        if seconds * 1000 + micros // 1000 > past_ms:
            return
        assert time.monotonic() < deadline, "Redis's clock did not advance"
        time.sleep(0.01)  # a clock to pass, not an event to await


# --- turn recovery and the history bound ------------------------------------------------------


def test_a_redelivery_after_the_terminal_event_restores_the_turn(
    redis_client: redis.Redis, redis_port: int
) -> None:
    with scripted_services(create_model_app(), redis_port) as services:
        settings = Settings.from_env(services)
        cid = new_conversation_id()
        run_id = queue(redis_client, cid, "Plan 2 days in Lisbon")
        before_batch = ConversationState.from_entity({})
        committed = ConversationState.from_entity({})
        assert _run_in_entity(cid, run_id, "Plan 2 days in Lisbon", committed, settings)
        assert committed.runs[run_id]["status"] == "completed"
        written = len(entries(redis_client, cid))

        # The worker died after the terminal event, before Durable committed the state: the
        # operation comes again with the state from before the batch.
        assert _run_in_entity(cid, run_id, "Plan 2 days in Lisbon", before_batch, settings)
    assert len(entries(redis_client, cid)) == written, "a redelivery must write nothing"
    assert before_batch.history == committed.history
    assert before_batch.history[0]["role"] == "user"
    assert before_batch.runs[run_id]["status"] == "completed"


def _run_in_entity(
    cid: str, run_id: str, message: str, state: ConversationState, settings: Settings
) -> bool:
    """What the entity does for one delivery, on this test's Redis, model and tool servers."""
    assert settings.model is not None
    runner = travel_planner.bind(
        create_model_client(settings.model), settings.model.model, settings
    )
    client = redis.Redis(host=settings.redis.host, port=settings.redis.port, decode_responses=True)
    try:
        return run(
            cid,
            run_id,
            message,
            state,
            settings,
            agent=travel_planner,
            redis_client=client,
            runner=runner,
        )
    finally:
        client.close()


def _turn(n: int, tools: int = 0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"q{n}"}]
    for t in range(tools):
        messages.append({"role": "assistant", "tool_calls": [{"id": f"c{n}{t}"}]})
        messages.append({"role": "tool", "tool_call_id": f"c{n}{t}", "content": "r"})
    messages.append({"role": "assistant", "content": f"a{n}"})
    return messages


def test_the_history_bound_drops_whole_turns_and_keeps_tool_results_with_their_calls() -> None:
    history = _turn(1, tools=2) + _turn(2) + _turn(3, tools=1)
    assert bounded_history(history, 100) == history
    bounded = bounded_history(history, 6)
    assert bounded == _turn(2) + _turn(3, tools=1)
    assert bounded_history(history, 4) == _turn(3, tools=1)
    # The latest turn is kept whole even when it alone is over the bound.
    assert bounded_history(history, 2) == _turn(3, tools=1)
