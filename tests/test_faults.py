"""Real faults, end to end: Redis killed and restarted mid-run, the worker killed mid-run.

Each test runs the development host as a process against a real redis-server and the scripted
model, injects the fault, then asserts what every reader and the next request see.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agentstream.streamlog.keys import meta_key, stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, Api
from .devhost_process import devhost_process
from .redis_server import free_port, restartable_redis
from .resilient_reader import ResilientReader
from .standins import scripted_services

pytestmark = pytest.mark.slow  # processes killed, outages waited out

CITIES = ["Lisbon", "Rome", "Paris", "Oslo", "Vienna", "Prague"]
WAIT = 60.0  # upper bound for events a test awaits; never a timing assertion
OUTAGE_SECONDS = random.Random(20261206).uniform(1.0, 3.0)  # seeded: a failure reruns alike


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, str]]:
    """A model slow enough that every run is mid-flight when the fault comes."""
    with scripted_services(create_model_app(delay_seconds=0.04)) as services:
        yield {
            **services,
            "MODEL_TIMEOUT_SECONDS": "20",
            "STREAM_KEEPALIVE_SECONDS": "1",
            "DELTA_FLUSH_CHARS": "16",
        }


def start_runs(api: Api, count: int) -> list[str]:
    ids = []
    for city in CITIES[:count]:
        response = api.start(f"Plan 7 days in {city}")
        assert response.status_code == 202, response.text
        ids.append(response.json()["conversation_id"])
    return ids


def readers_for(base_url: str, cids: list[str], per_conversation: int) -> list[ResilientReader]:
    readers = [ResilientReader(base_url, cid) for cid in cids for _ in range(per_conversation)]
    for reader in readers:
        reader.start()
    for reader in readers:
        assert reader.saw_text.wait(WAIT), "every run must be streaming before the fault"
    return readers


def finish(readers: list[ResilientReader]) -> None:
    for reader in readers:
        reader.join(WAIT * 3)
        assert reader.finished, f"reader of {reader.cid} never got a terminal event"


def assert_exactly_once(readers: list[ResilientReader]) -> None:
    """Gapless seq, no repeated id, and every reader of a conversation saw the same events."""
    by_conversation: dict[str, list[dict[str, Any]]] = {}
    for reader in readers:
        events = reader.events
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert len({e["id"] for e in events}) == len(events)
        seen = by_conversation.setdefault(reader.cid, events)
        assert events == seen


def test_redis_killed_and_restarted_mid_run_loses_and_repeats_nothing(
    services: dict[str, str],
) -> None:
    with restartable_redis() as server:
        env = {
            **services,
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{server.port}",
            "REDIS_RETRY_SECONDS": "30",
        }
        with devhost_process(env, free_port()) as host:
            api = Api(host.base_url)
            cids = start_runs(api, 6)
            readers = readers_for(host.base_url, cids, per_conversation=2)

            server.kill()
            time.sleep(OUTAGE_SECONDS)  # the outage itself
            server.start()

            finish(readers)
            assert_exactly_once(readers)
            for reader in readers:
                assert reader.events[-1]["type"] == "run.completed", reader.events[-1]
                assert reader.responses > 1, "the outage must have cut every response"
            for cid in cids:
                assert api.send(cid, "Thanks, and one more day?").status_code == 202


def test_an_outage_longer_than_the_retry_budget_still_ends_every_run(
    services: dict[str, str],
) -> None:
    with restartable_redis() as server:
        env = {
            **services,
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{server.port}",
            "REDIS_RETRY_SECONDS": "1",
            "RUN_LEASE_SECONDS": "2",
        }
        with devhost_process(env, free_port()) as host:
            api = Api(host.base_url)
            cids = start_runs(api, 3)
            readers = readers_for(host.base_url, cids, per_conversation=1)
            lease_ends = _lease_ends(server.port, cids)

            server.kill()
            time.sleep(4.0)  # the outage: twice the retry budget, past every lease
            server.start()

            finish(readers)
            assert_exactly_once(readers)
            for reader in readers:
                last = reader.events[-1]
                assert last["type"] == "run.failed", last
                assert last["code"] in {"store_unavailable", "worker_lost"}
            for cid in cids:
                assert api.send(cid, "Try again please").status_code == 202
    assert lease_ends  # every run held a lease before the outage


def test_a_worker_killed_mid_run_is_reported_as_lost_and_frees_the_conversation(
    services: dict[str, str], redis_port: int, redis_store: redis.Redis
) -> None:
    env = {
        **services,
        "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
        "RUN_LEASE_SECONDS": "2",
    }
    with devhost_process(env, free_port()) as host:
        api = Api(host.base_url)
        cids = start_runs(api, 4)
        read, unread = cids[:3], cids[3]
        readers = readers_for(host.base_url, read, per_conversation=1)
        _wait_until(lambda: _has_text(redis_store, unread), "the unread run must be streaming")
        run_id = redis_store.hget(meta_key(unread), "active_run")

        host.kill()
        host.start()  # same port; the development host does not redeliver (Durable would)

        finish(readers)
        assert_exactly_once(readers)
        for reader in readers:
            assert reader.events[-1]["type"] == "run.failed"
            assert reader.events[-1]["code"] == "worker_lost"

        # Cancelling a run whose worker is gone ends it at once (no request met it before).
        lease_end = int(redis_store.hget(meta_key(unread), f"lease:{run_id}"))
        _wait_until(lambda: _redis_ms(redis_store) > lease_end, "Redis's clock must pass the lease")
        cancelled = api.http.post(f"{AGENT}/conversations/{unread}/runs/{run_id}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        assert api.read_sse(unread, cursor="0")[-1]["type"] == "run.cancelled"

        for cid in cids:
            assert api.send(cid, "Let's try that again").status_code == 202


def _lease_ends(port: int, cids: list[str]) -> list[int]:
    ends = []
    with redis.Redis(port=port, decode_responses=True) as sync:
        for cid in cids:
            run_id = sync.hget(meta_key(cid), "active_run")
            ends.append(int(sync.hget(meta_key(cid), f"lease:{run_id}")))
    return ends


def _has_text(sync: redis.Redis, cid: str) -> bool:
    return any(f["type"] == "message.delta" for _, f in sync.xrange(stream_key(cid)))


def _redis_ms(sync: redis.Redis) -> int:
    seconds, micros = sync.time()
    return seconds * 1000 + micros // 1000


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)  # polling state another process changes; there is no event to await
