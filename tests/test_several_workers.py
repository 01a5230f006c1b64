"""Several development-host processes on one Redis Cluster: the readers of a conversation sit on
other workers than its writer, and the readers of a worker that is SIGKILLed mid-run resume on
another worker with nothing lost or repeated."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from agentstream.streamlog.keys import stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, TERMINAL
from .devhost_process import DevHostProcess, devhost_process
from .redis_cluster import RedisClusterUnderTest, running_cluster
from .redis_server import free_port
from .standins import scripted_services

READERS_PER_WORKER = 4


class FailoverReader(threading.Thread):
    """Reads from one worker; when that worker is gone, resumes from its last id on the next."""

    def __init__(self, urls: list[str], first: int, cid: str, cursor: str) -> None:
        super().__init__(daemon=True)
        self.urls, self.current, self.cid, self.cursor = urls, first, cid, cursor
        self.events: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.served_by: list[int] = []
        self.started_text = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            timeout = httpx.Timeout(30, connect=2)
            with (
                httpx.Client(base_url=self.urls[self.current], timeout=timeout) as http,
                contextlib.suppress(httpx.HTTPError),
            ):
                self._read_once(http)
            if self.events and self.events[-1]["type"] in TERMINAL:
                return
            # The worker went away (or the response ended early): go on at the next one.
            self.current = (self.current + 1) % len(self.urls)
            time.sleep(0.1)  # the client's own backoff between attempts

    def _read_once(self, http: httpx.Client) -> None:
        cursor = self.events[-1]["id"] if self.events else self.cursor
        path = f"{AGENT}/conversations/{self.cid}/stream"
        with connect_sse(http, "GET", path, params={"cursor": cursor}) as source:
            self.statuses.append(source.response.status_code)
            if source.response.status_code != 200:
                source.response.read()
                return
            self.served_by.append(self.current)
            for sse in source.iter_sse():
                if sse.data:
                    self.events.append(json.loads(sse.data))
                    if self.events[-1]["type"] == "message.delta":
                        self.started_text.set()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterUnderTest]:
    with running_cluster(3, 1) as started:
        yield started


@pytest.fixture
def workers(cluster: RedisClusterUnderTest) -> Iterator[list[DevHostProcess]]:
    model = create_model_app(delay_seconds=0.001)
    with scripted_services(model) as services, contextlib.ExitStack() as stack:
        env = {**services, "REDIS_CONNECTION_STRING": cluster.connection_string}
        yield [stack.enter_context(devhost_process(env, free_port())) for _ in range(3)]


@pytest.mark.slow
def test_readers_of_a_killed_worker_resume_on_the_others_with_nothing_lost(
    cluster: RedisClusterUnderTest, workers: list[DevHostProcess]
) -> None:
    urls = [worker.base_url for worker in workers]
    writer, doomed = 0, 1
    message = {"message": "Plan 3 days in Oslo [[slow]]"}
    with httpx.Client(base_url=urls[writer], timeout=30) as http:
        posted = http.post(f"{AGENT}/conversations", json=message)
    assert posted.status_code == 202, posted.text
    cid, cursor = posted.json()["conversation_id"], posted.json()["cursor"]
    readers = [
        FailoverReader(urls, index, cid, cursor)
        for index in range(len(urls))
        for _ in range(READERS_PER_WORKER)
    ]
    for reader in readers:
        reader.start()
    assert all(reader.started_text.wait(30) for reader in readers), "a reader never got text"
    workers[doomed].kill()  # mid-run: the run's writer is on another worker
    for reader in readers:
        reader.join(timeout=120)
        assert not reader.is_alive(), "a reader never got its terminal event"

    store = redis.RedisCluster(host="127.0.0.1", port=cluster.port, decode_responses=True)
    try:
        stored = [entry_id for entry_id, _ in store.xrange(stream_key(cid))]
    finally:
        store.close()
    for reader in readers:
        assert all(status == 200 for status in reader.statuses), reader.statuses
        assert [e["id"] for e in reader.events] == stored[1:]
        assert [e["seq"] for e in reader.events] == list(range(1, len(stored)))
    moved = [r for r in readers if r.served_by[0] == doomed]
    assert moved and all(doomed not in r.served_by[1:] for r in moved)
    assert all(len(r.served_by) > 1 for r in moved), "the killed worker's readers resumed elsewhere"
