"""Durable entities, hosted in memory: the part of the Durable Task backend the app uses.

Each entity instance has a queue and runs one batch at a time on a worker thread, as the Durable
extension does. A batch is the extension's string protocol: every operation queued while the
previous batch ran is delivered together, each with ``isSignal`` and an ``id``, its input exactly
as the client posted it (``null`` for an empty body). The reply must carry one result per
operation; a reply that does not is rejected whole (state unchanged), as the extension aborts such
a batch. State lives in this process only (it is lost on restart, and nothing is redelivered).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

EntityHandler = Callable[[str], str]

THREAD_COUNT_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"
# The extension's cap on Consumption plans (host.json maxEntityOperationBatchSize overrides it).
MAX_BATCH_SIZE = 50


def thread_count(environ: Mapping[str, str]) -> int | None:
    """Threads for entity batches, from the setting the Python worker reads.

    ``None`` (unset or not a positive whole number) means the worker's default,
    ``default_thread_count()``. Each running agent holds one thread for its whole run.
    """
    raw = environ.get(THREAD_COUNT_SETTING, "").strip()
    if not raw:
        return None
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        logger.warning("%s must be a whole number >= 1: default used", THREAD_COUNT_SETTING)
        return None
    return count


def default_thread_count() -> int:
    """What ``ThreadPoolExecutor`` picks when not told: ``min(32, cores + 4)``."""
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass
class Operation:
    name: str
    input: str | None  # the posted body, verbatim; None when the body was empty
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_batch_entry(self) -> dict[str, Any]:
        return {"name": self.name, "input": self.input, "isSignal": True, "id": self.id}


@dataclass
class _Instance:
    name: str
    key: str
    state: str | None = None  # the serialized state, exactly as the SDK returned it
    queue: deque[Operation] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    running: list[Operation] = field(default_factory=list)  # the batch on a thread now


class MalformedReply(ValueError):
    """The entity function's reply is not a batch result the extension would accept."""


class EntityHost:
    def __init__(
        self,
        handlers: dict[str, EntityHandler],
        max_workers: int | None = None,
        max_batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        # Durable matches entity names case-insensitively.
        self._handlers = {name.lower(): handler for name, handler in handlers.items()}
        self._instances: dict[tuple[str, str], _Instance] = {}
        self.max_workers = max_workers or default_thread_count()
        self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="entity")
        self._max_batch_size = max_batch_size

    def knows(self, name: str) -> bool:
        return name.lower() in self._handlers

    def signal(self, name: str, key: str, operation: str, body: str | None) -> None:
        """Queue one operation; ``body`` is the request body exactly as the client posted it."""
        instance = self._instance(name, key)
        instance.queue.append(Operation(operation, body))
        if instance.worker is None or instance.worker.done():
            instance.worker = asyncio.get_running_loop().create_task(self._drain(instance))

    def state(self, name: str, key: str) -> Any | None:
        instance = self._instances.get((name.lower(), key))
        if instance is None or instance.state is None:
            return None
        return json.loads(instance.state)

    def in_flight(self) -> list[tuple[str, str, Operation]]:
        """``(entity name, key, operation)`` of every operation running on a thread now."""
        return [
            (instance.name, instance.key, operation)
            for instance in self._instances.values()
            for operation in instance.running
        ]

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the running batches; whether they all ended."""
        for instance in self._instances.values():
            instance.queue.clear()  # stopping: what has not started yet will not
        workers = [i.worker for i in self._instances.values() if i.worker and not i.worker.done()]
        if not workers:
            return True
        _, pending = await asyncio.wait(workers, timeout=timeout)
        return not pending

    def busy(self) -> bool:
        return any(instance.running for instance in self._instances.values())

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _instance(self, name: str, key: str) -> _Instance:
        ident = (name.lower(), key)
        if ident not in self._instances:
            self._instances[ident] = _Instance(name.lower(), key)
        return self._instances[ident]

    async def _drain(self, instance: _Instance) -> None:
        loop = asyncio.get_running_loop()
        while instance.queue:
            count = min(len(instance.queue), self._max_batch_size)
            batch = [instance.queue.popleft() for _ in range(count)]
            instance.running = batch
            try:
                await loop.run_in_executor(self._executor, self._execute, instance, batch)
            except MalformedReply as exc:
                logger.error(
                    "entity @%s@%s: reply rejected, state unchanged: %s",
                    instance.name,
                    instance.key,
                    exc,
                )
            except Exception as exc:  # noqa: BLE001 - keep serving the other operations
                logger.error(
                    "entity @%s@%s: a batch of %d failed in the host: %s",
                    instance.name,
                    instance.key,
                    len(batch),
                    type(exc).__name__,
                )
            finally:
                instance.running = []

    def _execute(self, instance: _Instance, batch: list[Operation]) -> None:
        request = {
            "self": {"name": instance.name, "key": instance.key},
            "exists": instance.state is not None,
            "state": instance.state,
            "batch": [operation.to_batch_entry() for operation in batch],
        }
        handler = self._handlers[instance.name]
        reply = check_reply(json.loads(handler(json.dumps(request))), len(batch))
        for operation, outcome in zip(batch, reply["results"], strict=True):
            if outcome.get("isError"):
                logger.error(
                    "entity @%s@%s: %s raised", instance.name, instance.key, operation.name
                )
        instance.state = reply.get("entityState") if reply.get("entityExists") else None


def check_reply(reply: Any, operations: int) -> dict[str, Any]:
    """The reply, if the extension would accept it: one result per operation, a signals list."""
    if not isinstance(reply, dict):
        raise MalformedReply("the entity reply is not a JSON object")
    results = reply.get("results")
    if not isinstance(results, list) or len(results) != operations:
        count = len(results) if isinstance(results, list) else 0
        raise MalformedReply(f"{count} results for {operations} operations")
    if not all(isinstance(result, dict) for result in results):
        raise MalformedReply("a result is not a JSON object")
    if not isinstance(reply.get("signals"), list):
        raise MalformedReply("signals is not a list")
    return reply
