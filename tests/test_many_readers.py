"""A thousand live readers on one development-host process, over real HTTP and a real Redis."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from agentstream.events import MESSAGE_DELTA, RUN_COMPLETED, RUN_STARTED
from agentstream.streamlog.control import Limits, start_run
from agentstream.streamlog.runlog import RunLog
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, TERMINAL
from .devhost_process import running_devhost
from .standins import scripted_services

pytestmark = pytest.mark.slow  # a thousand readers

READERS = 1000
STREAMS = 10
NDJSON = {"Accept": "application/x-ndjson"}


@pytest.fixture(scope="module")
def base_env(redis_port: int) -> Iterator[dict[str, str]]:
    model = create_model_app(delay_seconds=0.001)
    with scripted_services(model, redis_port) as services:
        yield {**services, "STREAM_KEEPALIVE_SECONDS": "2"}


def stream_url(cid: str) -> str:
    return f"{AGENT}/conversations/{cid}/stream"


async def read_lines(
    http: httpx.AsyncClient, cid: str, attached: asyncio.Queue[None] | None = None
) -> list[str]:
    """One NDJSON response, line by line, until the terminal event."""
    lines: list[str] = []
    async with http.stream("GET", stream_url(cid), headers=NDJSON) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line:
                continue  # keep-alive
            lines.append(line)
            if attached is not None and len(lines) == 1:
                attached.put_nowait(None)
            if json.loads(line)["type"] in TERMINAL:
                break
    return lines


async def attached_readers(
    http: httpx.AsyncClient, runs: list[tuple[str, str]], readers: int, timeout: float
) -> list[asyncio.Task[list[str]]]:
    """``readers`` NDJSON readers spread over ``runs``, once every one has its first event."""
    attached: asyncio.Queue[None] = asyncio.Queue()
    tasks = [
        asyncio.create_task(read_lines(http, runs[i % len(runs)][0], attached))
        for i in range(readers)
    ]
    async with asyncio.timeout(timeout):
        for _ in range(readers):
            await attached.get()  # every reader has its first event (run.queued)
    return tasks


def write_runs(client: redis.Redis, runs: list[tuple[str, str]], deltas: int) -> None:
    """The agents' side: every run streams its deltas, interleaved, then completes."""
    logs = [RunLog(client, cid, run_id, ttl_seconds=600, maxlen=10_000) for cid, run_id in runs]
    for log in logs:
        log.append(RUN_STARTED, {"attempt": 1})
    for i in range(deltas):
        for log in logs:
            log.append(MESSAGE_DELTA, {"text": f"tok{i} "})
    for log in logs:
        log.append(RUN_COMPLETED, {"finish_reason": "stop", "usage": None})


def reader_connections(client: redis.Redis) -> int:
    names = ("agentstream-readers", "agentstream-hub", "agentstream-blocking-readers")
    return sum(1 for c in client.client_list() if c["name"] in names)


async def test_a_thousand_readers_share_a_few_connections_while_every_route_answers(
    base_env: dict[str, str], redis_client: redis.Redis, aclient: aioredis.Redis
) -> None:
    runs: list[tuple[str, str]] = []
    for _ in range(STREAMS):
        cid, run_id = uuid.uuid4().hex, uuid.uuid4().hex
        await start_run(
            aclient,
            cid,
            run_id,
            "hello",
            idempotency_key=None,
            must_exist=False,
            limits=Limits(ttl_seconds=600, maxlen=10_000),
        )
        runs.append((cid, run_id))

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    with running_devhost(base_env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            readers = await attached_readers(http, runs, READERS, 300)
            assert reader_connections(redis_client) <= 4

            writer = threading.Thread(target=write_runs, args=(redis_client, runs, 20))
            writer.start()
            # While the thousand readers are live, every other route still answers.
            async with httpx.AsyncClient(base_url=url, timeout=60) as other:
                health = await other.get("/api/health")
                assert health.status_code == 200, health.text
                posted = await other.post(f"{AGENT}/conversations", json={"message": "Paris"})
                assert posted.status_code == 202, posted.text
                new_cid = posted.json()["conversation_id"]
                status = await other.get(f"{AGENT}/conversations/{runs[0][0]}")
                assert status.status_code == 200, status.text
                new_stream = await read_lines(other, new_cid)
                assert json.loads(new_stream[-1])["type"] == RUN_COMPLETED
            assert reader_connections(redis_client) <= 4
            async with asyncio.timeout(300):
                results = await asyncio.gather(*readers)
            await asyncio.to_thread(writer.join)

            # Every reader got exactly what one uninterrupted read of its stream gets.
            reference = {cid: await read_lines(http, cid) for cid, _ in runs}
    for i, lines in enumerate(results):
        expected = reference[runs[i % STREAMS][0]]
        assert len(expected) == 1 + 1 + 20 + 1
        assert lines == expected


async def test_at_capacity_is_503_with_retry_after_and_without_the_hub_streams_still_work(
    base_env: dict[str, str], redis_client: redis.Redis
) -> None:
    env = {**base_env, "STREAM_HUB": "false", "STREAM_MAX_READERS": "1"}
    with running_devhost(env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            posted = await http.post(f"{AGENT}/conversations", json={"message": "Rome"})
            assert posted.status_code == 202, posted.text
            body: dict[str, Any] = posted.json()
            cid = body["conversation_id"]
            async with http.stream("GET", stream_url(cid), headers=NDJSON) as first:
                assert first.status_code == 200
                second = await http.get(stream_url(cid), headers=NDJSON)
                assert second.status_code == 503
                assert second.json()["error"]["code"] == "at_capacity"
                assert int(second.headers["Retry-After"]) > 0
                # POST, status and health are not affected by the readers' limit.
                assert (await http.get("/api/health")).status_code == 200
                assert (await http.get(f"{AGENT}/conversations/{cid}")).status_code == 200
                lines = [line async for line in first.aiter_lines() if line]
            assert json.loads(lines[-1])["type"] in TERMINAL
            # The slot is free again once the first response ended.
            again = await http.get(stream_url(cid), params={"cursor": "0"}, headers=NDJSON)
            assert again.status_code == 200
            assert [line for line in again.text.splitlines() if line] == lines
            # An hour ahead: no run can have written it (a recent cursor beyond the end may name
            # a run.queued a failover lost, and waits for it to be written again).
            last_ms = int(json.loads(lines[-1])["id"].split("-")[0])
            ahead = last_ms + 3_600_000
            beyond = await http.get(stream_url(cid), params={"cursor": f"{ahead}-0"})
            assert beyond.status_code == 400
            assert beyond.json()["error"]["code"] == "cursor_beyond_end"
