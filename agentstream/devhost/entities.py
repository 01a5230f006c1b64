"""Durable entities, hosted in memory: the part of the Durable Task backend the app uses.

Each entity instance has a queue and processes one operation at a time on a worker thread, as
the Durable extension does; operations get the host-shaped batch JSON and the SDK's handler
returns the new state. State lives in this process only (it is lost on restart).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

EntityHandler = Callable[[str], str]


@dataclass
class _Instance:
    name: str
    key: str
    state: str | None = None  # the serialized state, exactly as the SDK returned it
    queue: deque[tuple[str, str | None]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


class EntityHost:
    def __init__(self, handlers: dict[str, EntityHandler], max_workers: int = 16) -> None:
        # Durable matches entity names case-insensitively.
        self._handlers = {name.lower(): handler for name, handler in handlers.items()}
        self._instances: dict[tuple[str, str], _Instance] = {}
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="entity")

    def knows(self, name: str) -> bool:
        return name.lower() in self._handlers

    def signal(self, name: str, key: str, operation: str, body: str | None) -> None:
        """Queue one operation; ``body`` is the request body exactly as the client posted it."""
        instance = self._instance(name, key)
        instance.queue.append((operation, body))
        if instance.worker is None or instance.worker.done():
            instance.worker = asyncio.get_running_loop().create_task(self._drain(instance))

    def state(self, name: str, key: str) -> Any | None:
        instance = self._instances.get((name.lower(), key))
        if instance is None or instance.state is None:
            return None
        return json.loads(instance.state)

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
            operation, body = instance.queue.popleft()
            try:
                await loop.run_in_executor(self._executor, self._execute, instance, operation, body)
            except Exception as exc:  # noqa: BLE001 - keep serving the other operations
                logger.error(
                    "entity @%s@%s: %s failed in the host: %s",
                    instance.name,
                    instance.key,
                    operation,
                    type(exc).__name__,
                )

    def _execute(self, instance: _Instance, operation: str, body: str | None) -> None:
        context = {
            "self": {"name": instance.name, "key": instance.key},
            "exists": instance.state is not None,
            "state": instance.state,
            # The SDK's client posts the input JSON-encoded twice (a JSON string holding JSON);
            # the host hands that wire body over as the operation input, unchanged.
            "batch": [{"name": operation, "signal": True, "input": body}],
        }
        handler = self._handlers[instance.name]
        result = json.loads(handler(json.dumps(context)))
        for outcome in result.get("results", []):
            if outcome.get("isError"):
                logger.error(
                    "entity @%s@%s: operation %s raised", instance.name, instance.key, operation
                )
        instance.state = result.get("entityState") if result.get("entityExists") else None
