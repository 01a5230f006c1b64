"""The development host's entity batches: the Durable extension's format, on the real SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any

import azure.durable_functions as df
import pytest

from agentstream_dev.devhost.entities import EntityHost, default_thread_count, thread_count


def counter(context: df.DurableEntityContext) -> None:
    value = context.get_state(lambda: 0)
    if context.operation_name == "add":
        amount = context.get_input()  # the SDK raises TypeError for a null input
        if not isinstance(amount, int):
            context.set_result("malformed")
            return
        value += amount
        context.set_state(value)
    context.set_result(value)


class Recorder:
    """Wraps an entity handler: records each batch and reply, and can hold the next batch."""

    def __init__(self, handler: Any, reply: Any = None) -> None:
        self.handler = handler
        self.reply = reply
        self.batches: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Semaphore(0)
        self.finished = threading.Semaphore(0)

    def __call__(self, batch: str) -> str:
        self.entered.release()
        self.release.wait(10)
        reply = self.handler(batch) if self.reply is None else self.reply(batch)
        self.batches.append((json.loads(batch), json.loads(reply)))
        self.finished.release()
        return reply


async def acquired(semaphore: threading.Semaphore) -> None:
    assert await asyncio.to_thread(semaphore.acquire, timeout=10)


def signal_body(value: Any) -> str:
    """What the SDK's client posts for an input: the JSON encoded twice."""
    return json.dumps(json.dumps(value))


async def test_operations_queued_during_a_batch_arrive_together_in_the_extensions_format() -> None:
    recorder = Recorder(df.Entity.create(counter))
    host = EntityHost({"Counter": recorder})
    try:
        recorder.release.clear()
        host.signal("counter", "k1", "add", signal_body(2))
        await acquired(recorder.entered)  # the first batch is running (held)
        host.signal("COUNTER", "k1", "add", None)  # an empty body: a null input
        host.signal("counter", "k1", "add", signal_body(5))
        host.signal("counter", "k1", "add", signal_body("five"))
        recorder.release.set()
        await acquired(recorder.finished)
        await acquired(recorder.finished)
    finally:
        host.close()

    (first, first_reply), (second, second_reply) = recorder.batches
    assert first["self"] == {"name": "counter", "key": "k1"}
    assert first["exists"] is False and first["state"] is None
    assert [op["input"] for op in first["batch"]] == [signal_body(2)]
    assert [op["input"] for op in second["batch"]] == [None, signal_body(5), signal_body("five")]
    operations = first["batch"] + second["batch"]
    assert all(op["isSignal"] is True and op["name"] == "add" for op in operations)
    assert len({op["id"] for op in operations}) == 4
    assert second["exists"] is True and second["state"] == first_reply["entityState"]
    null_result, added, malformed = second_reply["results"]
    assert null_result["isError"] is True
    assert (added["isError"], json.loads(added["result"])) == (False, 7)
    assert json.loads(malformed["result"]) == "malformed"
    assert host.state("counter", "k1") == 7


async def test_a_reply_without_one_result_per_operation_is_rejected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def short_reply(batch: str) -> str:
        return json.dumps({"entityExists": True, "entityState": "99", "results": [], "signals": []})

    recorder = Recorder(None, reply=short_reply)
    host = EntityHost({"counter": recorder})
    try:
        with caplog.at_level(logging.ERROR):
            host.signal("counter", "k2", "add", signal_body(1))
            await acquired(recorder.finished)
            host.signal("counter", "k2", "add", signal_body(1))
            await acquired(recorder.finished)
    finally:
        host.close()
    assert host.state("counter", "k2") is None  # nothing committed
    assert len(recorder.batches) == 2  # the entity keeps being served
    assert "0 results for 1 operations" in caplog.text


def test_the_thread_count_follows_the_workers_setting(caplog: pytest.LogCaptureFixture) -> None:
    assert thread_count({}) is None
    assert thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "3"}) == 3
    with caplog.at_level(logging.WARNING):
        assert thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "many"}) is None
        assert thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "0"}) is None
    assert "PYTHON_THREADPOOL_THREAD_COUNT must be" in caplog.text
    assert "many" not in caplog.text
    assert default_thread_count() == min(32, (os.cpu_count() or 1) + 4)
    host = EntityHost({}, max_workers=thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "3"}))
    try:
        assert host.max_workers == 3
    finally:
        host.close()
    host = EntityHost({}, max_workers=None)
    try:
        assert host.max_workers == default_thread_count()
    finally:
        host.close()
