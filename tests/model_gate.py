"""Hold the scripted model's answers until a test lets them go.

Wraps the scripted model's ASGI app: a chat-completions request whose latest user message
contains ``[[held]]`` waits while the gate is closed. A run held there has started (its
``run.started`` is written) and occupies its worker thread, so tests can observe a run in
progress, or a full thread pool, without relying on timing. The scripted model itself ignores
the unknown marker.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

HELD = "[[held]]"


class ModelGate:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._opened = threading.Event()
        self._changed = threading.Condition()
        self._held = 0

    def close(self) -> None:
        with self._changed:
            self._opened = threading.Event()
            self._held = 0

    def open(self) -> None:
        self._opened.set()

    def wait_held(self, count: int, timeout: float = 60) -> int:
        """Wait until ``count`` requests are held (or the timeout); return how many are."""
        with self._changed:
            self._changed.wait_for(lambda: self._held >= count, timeout)
            return self._held

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        opened = self._opened
        if _latest_user_message_is_held(body) and not opened.is_set():
            with self._changed:
                self._held += 1
                self._changed.notify_all()
            await asyncio.to_thread(opened.wait)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _latest_user_message_is_held(body: bytes) -> bool:
    try:
        messages = json.loads(body).get("messages") or []
    except (ValueError, AttributeError):
        return False
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return bool(users) and HELD in str(users[-1].get("content"))
