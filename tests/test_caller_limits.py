"""Per-caller limits held in Redis: two development-host processes share them through one Redis.

Callers are told apart by client address here (``AUTH_MODE=key``: the last ``X-Forwarded-For``
hop); with identities the same code counts per caller id.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT
from .devhost_process import running_devhost
from .model_gate import HELD, ModelGate
from .standins import scripted_services

pytestmark = pytest.mark.slow  # two development-host processes on one Redis

HELD_PLAN = f"{HELD} Plan 2 days in Lisbon"


@pytest.fixture(scope="module")
def gate() -> Iterator[ModelGate]:
    gate = ModelGate(create_model_app(delay_seconds=0.001))
    yield gate
    gate.open()


@pytest.fixture(scope="module")
def hosts(redis_port: int, gate: ModelGate) -> Iterator[tuple[str, str]]:
    with scripted_services(gate, redis_port) as services:
        env = {
            **services,
            "LIMIT_ACTIVE_RUNS": "2",
            "LIMIT_RUNS_PER_MINUTE": "4",
            "LIMIT_OPEN_STREAMS": "1",
            "STREAM_KEEPALIVE_SECONDS": "1",
        }
        with running_devhost(env) as first, running_devhost(env) as second:
            yield first, second


@pytest.fixture
def closed_gate(gate: ModelGate) -> Iterator[ModelGate]:
    gate.close()
    yield gate
    gate.open()


class Caller:
    """One client address, talking to either worker."""

    def __init__(self, hosts: tuple[str, str]) -> None:
        self.hosts = hosts
        # What a client may claim first, then the hop the front end adds: that one counts.
        own = uuid.uuid4().hex
        self.headers = {"X-Forwarded-For": f"203.0.113.9, 2001:db8::{own[:4]}:{own[4:8]}"}

    def start(
        self, host: int, message: str = "Plan 2 days in Lisbon", key: str | None = None
    ) -> httpx.Response:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return httpx.post(
            f"{self.hosts[host]}{AGENT}/conversations",
            json={"message": message},
            headers=headers,
            timeout=30,
        )

    def stream_url(self, host: int, cid: str) -> str:
        return f"{self.hosts[host]}{AGENT}/conversations/{cid}/stream"

    def read_to_end(self, host: int, cid: str) -> str:
        response = httpx.get(
            self.stream_url(host, cid), params={"cursor": "0"}, headers=self.headers, timeout=60
        )
        assert response.status_code == 200, response.text
        return response.text


def assert_over(response: httpx.Response, limit: str) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "limit_exceeded" and error["limit"] == limit
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


def started(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return response.json()


def test_active_runs_are_counted_across_workers(
    hosts: tuple[str, str], closed_gate: ModelGate
) -> None:
    alice, bob = Caller(hosts), Caller(hosts)
    first = started(alice.start(0, HELD_PLAN))
    second = started(alice.start(1, HELD_PLAN, key="alice-retry-1"))
    assert_over(alice.start(0, HELD_PLAN), "active_runs")
    assert_over(alice.start(1, HELD_PLAN), "active_runs")
    # A retry of a request that did start gets its answer back, at the limit too.
    assert started(alice.start(0, HELD_PLAN, key="alice-retry-1")) == second
    started(bob.start(1, HELD_PLAN))  # another caller is not affected
    assert closed_gate.wait_held(3) >= 3
    closed_gate.open()
    for body in (first, second):
        assert "run.completed" in alice.read_to_end(0, body["conversation_id"])
    # Runs that ended no longer count.
    started(alice.start(1))


def test_new_runs_per_minute_are_counted_across_workers(hosts: tuple[str, str]) -> None:
    carol, dave = Caller(hosts), Caller(hosts)
    for attempt in range(4):
        body = started(carol.start(attempt % 2))
        assert "run.completed" in carol.read_to_end(attempt % 2, body["conversation_id"])
    assert_over(carol.start(0), "runs_per_minute")
    assert_over(carol.start(1), "runs_per_minute")
    started(dave.start(0))


def test_open_streams_are_counted_across_workers(
    hosts: tuple[str, str], closed_gate: ModelGate
) -> None:
    erin, frank = Caller(hosts), Caller(hosts)
    cid = started(erin.start(0, HELD_PLAN))["conversation_id"]
    with (
        httpx.Client(headers=erin.headers, timeout=30) as http,
        http.stream("GET", erin.stream_url(0, cid)) as live,
    ):
        assert live.status_code == 200
        lines = live.iter_lines()  # kept: a collected iterator closes the response
        next(lines)  # the response is under way
        assert_over(httpx.get(erin.stream_url(1, cid), headers=erin.headers), "open_streams")
        # Another caller reads the same (key-mode, shared) conversation at the same time.
        with (
            httpx.Client(headers=frank.headers, timeout=30) as other,
            other.stream("GET", frank.stream_url(1, cid)) as theirs,
        ):
            assert theirs.status_code == 200
    # The first response ended: its slot is given back (asynchronously, so look a few times).
    deadline = time.monotonic() + 10
    while True:
        closed_gate.open()
        response = httpx.get(erin.stream_url(1, cid), headers=erin.headers, timeout=30)
        if response.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the release is a task on the server; nothing to await from here
    assert response.status_code == 200 and "run.completed" in response.text
