"""A trim that overtakes a live reader ends its response with the hole named, never silently.

The cap (``MAXLEN``) removes the oldest entries. Here the entries a live reader has not read yet
are written and trimmed in one transaction, so whatever the reader reads next starts after the
hole: what a reader too slow for a fast writer and a small cap meets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from httpx_sse import connect_sse
from jsonschema import Draft202012Validator

from agentstream.events import MESSAGE_DELTA, RUN_STARTED, STREAM_TRUNCATED, Event
from agentstream.streamlog import scripts
from agentstream.streamlog.continuity import StreamTruncated
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.hub import StreamHub
from agentstream.streamlog.keys import conversation_keys, stream_id_before, stream_key
from agentstream.streamlog.reader import CursorTrimmed, open_stream
from agentstream_client.http import ApiClient, ApiError, StreamPosition
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT
from .devhost_process import REPO, running_devhost
from .model_gate import HELD, ModelGate
from .standins import scripted_services
from .streamlog_helpers import collect, new_conversation_id, queued_run_log


def write_past_the_reader_and_trim(client: redis.Redis, cid: str, run_id: str) -> str:
    """Three deltas of the run, then the cap keeps only the last: returns its id."""
    with client.pipeline(transaction=True) as pipe:
        for n in range(3):
            args = scripts.append_args(
                run_id, MESSAGE_DELTA, {"text": f"{n} "}, ttl_ms=600_000, maxlen=10_000
            )
            pipe.eval(scripts.APPEND, 3, *conversation_keys(cid), *args)
        pipe.xtrim(stream_key(cid), maxlen=1, approximate=False)
        pipe.execute()
    return client.xrange(stream_key(cid))[0][0]


@pytest.mark.parametrize("use_hub", [True, False], ids=["hub", "blocking-read"])
async def test_the_live_read_ends_at_the_hole_and_resumes_past_it(
    use_hub: bool, redis_client: redis.Redis, redis_port: int
) -> None:
    cid, run_id = new_conversation_id(), uuid.uuid4().hex
    queued_run_log(redis_client, cid, run_id).append(RUN_STARTED, {"attempt": 1})
    async with (
        aioredis.Redis(port=redis_port, decode_responses=True) as client,
        aioredis.Redis(port=redis_port, decode_responses=True) as lanes,
    ):
        hub = StreamHub(lanes, client, lanes=1, queue_limit=100) if use_hub else None
        opened = await open_stream(
            client, cid, Cursor("0-0"), keepalive_seconds=1, max_seconds=5, hub=hub
        )
        delivered: list[Event] = []
        batches = opened.batches()
        while len(delivered) < 2:
            delivered += await anext(batches) or []
        survivor = write_past_the_reader_and_trim(redis_client, cid, run_id)
        with pytest.raises(StreamTruncated) as truncated:
            async for batch in batches:
                delivered += batch or []
        assert [event.seq for event in delivered] == [0, 1]
        assert truncated.value.last_id == delivered[-1].id
        assert truncated.value.next_id == survivor
        # Resuming where the reader stopped is refused; the resume cursor goes on past the hole.
        with pytest.raises(CursorTrimmed):
            await open_stream(
                client, cid, Cursor(delivered[-1].id), keepalive_seconds=1, max_seconds=1
            )
        rest = await collect(
            client, cid, Cursor(truncated.value.resume_cursor), keepalive_seconds=1, max_seconds=1
        )
        assert [(event.id, event.seq) for event in rest] == [(survivor, 4)]
        if hub is not None:
            await hub.aclose()


@pytest.fixture(scope="module")
def gate() -> Iterator[ModelGate]:
    gate = ModelGate(create_model_app())
    yield gate
    gate.open()


@pytest.fixture(scope="module")
def app_url(redis_port: int, gate: ModelGate) -> Iterator[str]:
    with scripted_services(gate, redis_port) as env, running_devhost(env) as url:
        yield url


def test_the_sse_response_ends_with_a_stream_truncated_frame(
    app_url: str, gate: ModelGate, redis_client: redis.Redis
) -> None:
    gate.close()
    frames: list[tuple[str | None, str, dict[str, Any]]] = []
    try:
        with httpx.Client(base_url=app_url, timeout=30) as http:
            started = http.post(
                f"{AGENT}/conversations", json={"message": f"Plan 2 days in Rome {HELD}"}
            ).json()
            cid, run_id = started["conversation_id"], started["run_id"]
            assert gate.wait_held(1) == 1  # run.started is written; the model holds the run
            path = f"{AGENT}/conversations/{cid}/stream"
            with connect_sse(http, "GET", path, params={"cursor": "0"}) as source:
                for sse in source.iter_sse():
                    if not sse.data:
                        continue
                    frames.append((sse.id or None, sse.event, json.loads(sse.data)))
                    if sse.event == RUN_STARTED:
                        survivor = write_past_the_reader_and_trim(redis_client, cid, run_id)
                    elif len(frames) > 2:
                        break  # what came after the hole, if the response did not end by itself
    finally:
        gate.open()
    assert [event for _, event, _ in frames] == ["run.queued", RUN_STARTED, STREAM_TRUNCATED]
    frame_id, _, notice = frames[-1]
    started_id = frames[1][2]["id"]
    assert frame_id == started_id  # no id line of its own: the client's last id stays put
    assert notice == {
        "type": STREAM_TRUNCATED,
        "code": "cursor_trimmed",
        "message": notice["message"],
        "last_id": started_id,
        "resume_cursor": notice["resume_cursor"],
    }
    assert notice["resume_cursor"] == stream_id_before(survivor)
    document = json.loads((REPO / "agentstream" / "api" / "openapi.json").read_text())
    schema = {"$ref": "#/components/schemas/StreamTruncated", "components": document["components"]}
    Draft202012Validator(schema).validate(notice)


def test_the_console_client_reports_the_hole_instead_of_reading_past_it(
    app_url: str, gate: ModelGate, redis_client: redis.Redis
) -> None:
    gate.close()
    client = ApiClient(app_url)
    position = StreamPosition(cursor="0")
    seen: list[str] = []
    try:
        started = client.start(f"Plan 2 days in Oslo {HELD}")
        cid, run_id = started["conversation_id"], started["run_id"]
        assert gate.wait_held(1) == 1
        with pytest.raises(ApiError) as error:
            for event in client.follow(cid, position):
                seen.append(event["type"])
                if event["type"] == RUN_STARTED:
                    write_past_the_reader_and_trim(redis_client, cid, run_id)
                elif len(seen) > 2:
                    break
    finally:
        gate.open()
        client.close()
    assert seen == ["run.queued", RUN_STARTED]
    assert (error.value.status, error.value.code) == (410, "cursor_trimmed")
