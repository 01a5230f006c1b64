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
from .redis_connections import ConnectionPeaks
from .standins import scripted_services

pytestmark = pytest.mark.slow  # a thousand readers

READERS = 1000
STREAMS = 10
NDJSON = {"Accept": "application/x-ndjson"}
HUB_BOUND = 4  # STREAM_HUB_CONNECTIONS' default: hub connections per worker and Redis node
HUB_NAMES = ("agentstream-hub",)
READER_NAMES = ("agentstream-readers", "agentstream-blocking-readers")


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
    http: httpx.AsyncClient,
    runs: list[tuple[str, str]],
    readers: int,
    timeout: float,
    wave: int | None = None,
) -> list[asyncio.Task[list[str]]]:
    """``readers`` NDJSON readers spread over ``runs``, once every one has its first event.

    ``wave``: open that many at a time, each wave once the previous one is attached (a thousand
    opens at one instant on a cluster answer part of them ``503 at_capacity``; see
    docs/architecture.md, "Known limit").
    """
    attached: asyncio.Queue[None] = asyncio.Queue()
    tasks: list[asyncio.Task[list[str]]] = []
    async with asyncio.timeout(timeout):
        for first in range(0, readers, wave or readers):
            batch = range(first, min(readers, first + (wave or readers)))
            tasks += [
                asyncio.create_task(read_lines(http, runs[i % len(runs)][0], attached))
                for i in batch
            ]
            for _ in batch:
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


async def start_runs(aclient: Any, streams: int) -> list[tuple[str, str]]:
    runs: list[tuple[str, str]] = []
    for _ in range(streams):
        cid, run_id = uuid.uuid4().hex, uuid.uuid4().hex
        started = await start_run(
            aclient,
            cid,
            run_id,
            "hello",
            idempotency_key=None,
            must_exist=False,
            limits=Limits(ttl_seconds=600, maxlen=10_000),
        )
        assert started.outcome == "started"
        runs.append((cid, run_id))
    return runs


# A thousand readers of ten conversations, and a thousand conversations with a reader each (three
# deltas per run there: the bound and the exactness are the same, the writing is 5x shorter).
@pytest.mark.parametrize(("streams", "deltas"), [(STREAMS, 20), (READERS, 3)])
async def test_a_thousand_readers_share_a_few_connections_while_every_route_answers(
    base_env: dict[str, str],
    redis_client: redis.Redis,
    aclient: aioredis.Redis,
    redis_port: int,
    streams: int,
    deltas: int,
) -> None:
    runs = await start_runs(aclient, streams)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    names = {"hub": HUB_NAMES, "readers": READER_NAMES}
    with (
        running_devhost(base_env) as url,
        ConnectionPeaks({redis_port: redis_client}, names) as seen,
    ):
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            readers = await attached_readers(http, runs, READERS, 300)
            writer = threading.Thread(target=write_runs, args=(redis_client, runs, deltas))
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
            async with asyncio.timeout(300):
                results = await asyncio.gather(*readers)
            await asyncio.to_thread(writer.join)

            # Every reader got exactly what one uninterrupted read of its stream gets.
            reference = {cid: await read_lines(http, cid) for cid, _ in runs}
    # The hub's subscriber and reads, and the catch-up pool's two, whatever the readers.
    assert seen.peaks["hub"][redis_port] <= HUB_BOUND, seen.peaks
    assert seen.peaks["readers"][redis_port] <= 2, seen.peaks
    for i, lines in enumerate(results):
        expected = reference[runs[i % streams][0]]
        assert len(expected) == 1 + 1 + deltas + 1
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
