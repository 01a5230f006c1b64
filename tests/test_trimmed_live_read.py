"""A trim that overtakes a live reader ends its response with the hole named, never silently.

The cap (``MAXLEN``) removes the oldest entries. Here the entries a live reader has not read yet
are written and trimmed in one transaction, so whatever the reader reads next starts after the
hole: what a reader too slow for a fast writer and a small cap meets.
"""

from __future__ import annotations

import asyncio
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

from agentstream.api.streaming import EventStreamResponse
from agentstream.events import (
    MESSAGE_DELTA,
    NDJSON,
    RUN_STARTED,
    STREAM_TRUNCATED,
    TEXT,
    Event,
    stream_format,
    truncation_notice,
)
from agentstream.streamlog import scripts
from agentstream.streamlog.continuity import SeqContinuity
from agentstream.streamlog.cursor import Cursor
from agentstream.streamlog.keys import conversation_keys, stream_id_before, stream_key
from agentstream.streamlog.reader import open_stream
from agentstream_client.http import ApiClient, ApiError, StreamPosition
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT
from .devhost_process import REPO, running_devhost
from .model_gate import HELD, ModelGate
from .standins import scripted_services
from .streamlog_helpers import new_conversation_id, queued_run_log


def write_past_the_reader_and_trim(client: redis.Redis, cid: str, run_id: str) -> str:
    """Three deltas of the run, then the cap keeps only the last: returns its id."""
    keys = conversation_keys(cid)
    with client.pipeline(transaction=True) as pipe:
        for n in range(3):
            args = scripts.append_args(
                run_id, MESSAGE_DELTA, {"text": f"{n} "}, ttl_ms=600_000, maxlen=10_000
            )
            pipe.eval(scripts.APPEND, len(keys), *keys, *args)
        pipe.xtrim(stream_key(cid), maxlen=1, approximate=False)
        pipe.execute()
    return client.xrange(stream_key(cid))[0][0]


def event(entry_id: str, run: str, seq: int) -> Event:
    return Event(entry_id, MESSAGE_DELTA, run, seq, 0, {"text": "x"})


def test_continuity_finds_the_hole_inside_a_batch_and_across_batches() -> None:
    continuity = SeqContinuity()
    assert continuity.follow([event("1-0", "a", 0), event("1-1", "a", 1)]) == 2
    assert continuity.follow([event("1-2", "a", 2), event("1-5", "a", 5)]) == 1
    assert continuity.last is not None and continuity.last.id == "1-2"
    assert continuity.follow([event("1-6", "a", 6)]) == 0  # still after the hole
    fresh = SeqContinuity()
    assert fresh.follow([event("2-0", "a", 7), event("3-0", "b", 0), event("3-1", "b", 1)]) == 3
    assert fresh.follow([event("4-0", "c", 3)]) == 0  # a new run starts at seq 0


def test_ndjson_and_text_name_the_hole_too() -> None:
    line = json.loads(truncation_notice(NDJSON, "5-1", "9-2"))
    assert (line["type"], line["code"], line["last_id"], line["resume_cursor"]) == (
        STREAM_TRUNCATED,
        "cursor_trimmed",
        "5-1",
        "9-2",
    )
    assert truncation_notice(TEXT, "5-1", "9-2").decode().startswith("\n[stream truncated: ")


async def test_a_hole_between_opening_and_the_first_read_is_named_too(
    redis_client: redis.Redis, redis_port: int
) -> None:
    cid, run_id = new_conversation_id(), uuid.uuid4().hex
    started = queued_run_log(redis_client, cid, run_id).append(RUN_STARTED, {"attempt": 1})
    sent: list[dict[str, Any]] = []
    never = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await never.wait()  # the client stays
        return {"type": "http.disconnect"}

    async def on_idle() -> bool:
        return True

    async with aioredis.Redis(port=redis_port, decode_responses=True) as client:
        opened = await open_stream(
            client, cid, Cursor(started.id), keepalive_seconds=1, max_seconds=3
        )
        survivor = write_past_the_reader_and_trim(redis_client, cid, run_id)
        response = EventStreamResponse(opened, stream_format(NDJSON, 3000), on_idle)
        await response({"type": "http"}, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert [(line["type"], line.get("last_id")) for line in lines] == [
        (STREAM_TRUNCATED, started.id)
    ]
    assert lines[0]["resume_cursor"] == stream_id_before(survivor)


@pytest.fixture(scope="module")
def gate() -> Iterator[ModelGate]:
    gate = ModelGate(create_model_app())
    yield gate
    gate.open()


@pytest.fixture(scope="module", params=["true", "false"], ids=["hub", "blocking-read"])
def app_url(request: pytest.FixtureRequest, redis_port: int, gate: ModelGate) -> Iterator[str]:
    with (
        scripted_services(gate, redis_port) as env,
        running_devhost({**env, "STREAM_HUB": request.param}) as url,
    ):
        yield url


@pytest.fixture
def held(gate: ModelGate) -> Iterator[ModelGate]:
    """The model holds each run after its run.started until the test ends."""
    gate.close()
    yield gate
    gate.open()


def test_the_sse_response_ends_with_a_stream_truncated_frame(
    app_url: str, held: ModelGate, redis_client: redis.Redis
) -> None:
    frames: list[tuple[str | None, str, dict[str, Any]]] = []
    with httpx.Client(base_url=app_url, timeout=30) as http:
        started = http.post(
            f"{AGENT}/conversations", json={"message": f"Plan 2 days in Rome {HELD}"}
        ).json()
        cid, run_id = started["conversation_id"], started["run_id"]
        assert held.wait_held(1) == 1  # run.started is written; the model holds the run
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
        assert [event for _, event, _ in frames] == ["run.queued", RUN_STARTED, STREAM_TRUNCATED]
        frame_id, _, notice = frames[-1]
        started_id = frames[1][2]["id"]
        assert frame_id == started_id  # no id line of its own: the client's last id stays put
        assert (notice["last_id"], notice["resume_cursor"]) == (
            started_id,
            stream_id_before(survivor),
        )
        document = json.loads((REPO / "agentstream" / "api" / "openapi.json").read_text())
        schema = {
            "$ref": "#/components/schemas/StreamTruncated",
            "components": document["components"],
        }
        Draft202012Validator(schema).validate(notice)

        # Resuming where the reader stopped is refused; the resume cursor goes on past the hole.
        assert http.get(path, params={"cursor": started_id}).status_code == 410
        with connect_sse(http, "GET", path, params={"cursor": notice["resume_cursor"]}) as rest:
            after = next(json.loads(sse.data) for sse in rest.iter_sse() if sse.data)
        assert (after["id"], after["seq"]) == (survivor, 4)


def test_the_console_client_reports_the_hole_instead_of_reading_past_it(
    app_url: str, held: ModelGate, redis_client: redis.Redis
) -> None:
    client = ApiClient(app_url)
    position = StreamPosition(cursor="0")
    seen: list[str] = []
    try:
        started = client.start(f"Plan 2 days in Oslo {HELD}")
        cid, run_id = started["conversation_id"], started["run_id"]
        assert held.wait_held(1) == 1
        with pytest.raises(ApiError) as error:
            for got in client.follow(cid, position):
                seen.append(got["type"])
                if got["type"] == RUN_STARTED:
                    write_past_the_reader_and_trim(redis_client, cid, run_id)
                elif len(seen) > 2:
                    break
    finally:
        client.close()
    assert seen == ["run.queued", RUN_STARTED]
    assert (error.value.status, error.value.code) == (410, "cursor_trimmed")
