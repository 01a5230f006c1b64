"""Several development-host processes on one Redis Cluster: the readers of a conversation sit on
other workers than its writer, and the readers of a worker that is SIGKILLed mid-run resume on
another worker with nothing lost or repeated."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest
import redis

from agentstream.streamlog.keys import stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT
from .cursor_reader import CursorReader
from .devhost_process import DevHostProcess, devhost_process
from .redis_cluster import RedisClusterUnderTest, running_cluster
from .redis_server import free_port
from .standins import scripted_services

READERS_PER_WORKER = 4


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
        CursorReader(urls, cid, cursor, first=index)
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
