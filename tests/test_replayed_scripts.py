"""Every script the request pool may run twice gives the same answer the second time.

The request pool retries a command whose connection dropped (``redis_clients``): when Redis had
already executed it and only the reply was lost, the command runs again. These tests lose exactly
that reply with a proxy and check that the caller sees what the first execution decided.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agentstream.config import Settings
from agentstream.redis_clients import async_redis
from agentstream.streamlog import control, scripts
from agentstream.streamlog.keys import meta_key, stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api
from .devhost_process import running_devhost
from .redis_proxy import ReplyDropper, reply_dropping_proxy
from .standins import scripted_services
from .streamlog_helpers import new_conversation_id

LIMITS = control.Limits(ttl_seconds=600, maxlen=10_000, start_deadline_seconds=300)


@pytest.fixture
def proxy(redis_client: redis.Redis, redis_port: int) -> Iterator[ReplyDropper]:
    # Loaded beforehand, so the marked command is the script run itself, not a NOSCRIPT miss.
    for source in (scripts.START, scripts.CANCEL):
        redis_client.script_load(source)
    with reply_dropping_proxy(redis_port) as dropper:
        yield dropper


def through(proxy: ReplyDropper) -> Settings:
    """Settings whose request pool (with its retries) talks to Redis through the proxy."""
    return Settings.from_env({"REDIS_CONNECTION_STRING": f"127.0.0.1:{proxy.port}"})


def start(settings: Settings, cid: str, message: str, key: str | None) -> control.RunStart:
    async def go() -> control.RunStart:
        return await control.start_run(
            async_redis(settings),
            cid,
            uuid.uuid4().hex,
            message,
            idempotency_key=key,
            must_exist=False,
            limits=LIMITS,
        )

    return asyncio.run(go())


@pytest.mark.parametrize("key", [None, "client-key-1"])
def test_a_start_whose_reply_was_lost_reports_its_own_run_as_started(
    redis_client: redis.Redis, proxy: ReplyDropper, key: str | None
) -> None:
    cid = new_conversation_id()
    proxy.drop_reply_to(b"lost-reply-start")
    outcome = start(through(proxy), cid, "lost-reply-start", key)
    assert proxy.dropped == 1, "the proxy must have cut the connection after Redis answered"
    entries = redis_client.xrange(stream_key(cid))
    assert [fields["type"] for _, fields in entries] == ["run.queued"]
    assert outcome.outcome == "started"
    assert outcome.run_id == entries[0][1]["run"] and outcome.cursor == entries[0][0]


def test_a_cancel_whose_reply_was_lost_gives_its_first_answer(
    redis_client: redis.Redis, proxy: ReplyDropper
) -> None:
    cid = new_conversation_id()
    settings = through(proxy)
    stale = control.Limits(ttl_seconds=600, maxlen=10_000, start_deadline_seconds=0.001)
    run_id = uuid.uuid4().hex

    async def go() -> str | None:
        client = async_redis(settings)
        started = await control.start_run(
            client, cid, run_id, "hi", idempotency_key=None, must_exist=False, limits=stale
        )
        assert started.outcome == "started"
        deadline = int(redis_client.hget(meta_key(cid), f"deadline:{run_id}"))
        await _redis_clock_passes(client, deadline)
        proxy.drop_reply_to(run_id.encode())
        return await control.request_cancel(client, cid, run_id, stale)

    # The queued run's start deadline passed: the cancel ends it itself and says so.
    assert asyncio.run(go()) == "ended"
    assert proxy.dropped == 1
    types = [fields["type"] for _, fields in redis_client.xrange(stream_key(cid))]
    assert types == ["run.queued", "run.cancelled"]


async def _redis_clock_passes(client: Any, ms: int) -> None:
    while True:
        seconds, micros = await client.time()
        if seconds * 1000 + micros // 1000 > ms:
            return
        await asyncio.sleep(0.001)  # Redis's clock is the event; nothing to await on it


def test_a_post_whose_start_reply_was_lost_is_202_with_one_run_and_one_signal(
    redis_client: redis.Redis, proxy: ReplyDropper
) -> None:
    model = create_model_app(delay_seconds=0.001)
    with (
        scripted_services(model) as services,
        running_devhost({**services, "REDIS_CONNECTION_STRING": f"127.0.0.1:{proxy.port}"}) as url,
    ):
        api = Api(url)
        try:
            message = f"Hello there, {uuid.uuid4().hex}"
            proxy.drop_reply_to(message.encode())
            response = api.start(message)
            assert proxy.dropped == 1
            assert response.status_code == 202, response.text
            body = response.json()
            events = api.read_run(body["conversation_id"], body["cursor"])
        finally:
            api.http.close()
    cid, run_id = body["conversation_id"], body["run_id"]
    assert events[-1]["type"] == "run.completed"
    queued = [f for _, f in redis_client.xrange(stream_key(cid)) if f["type"] == "run.queued"]
    assert [f["run"] for f in queued] == [run_id]
    # One signal: the entity began the run once and asked the model once for this message.
    assert redis_client.hget(meta_key(cid), f"attempts:{run_id}") == "1"
    asked = [r for r in model.state.scripted.requests if message in str(r)]
    assert len(asked) == 1
