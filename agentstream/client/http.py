"""Talks to the HTTP API and follows a stream across disconnects."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse

from ..events import TERMINAL_TYPES

AGENT_PATH = "/api/agents/travelplanner/conversations"


class ApiError(Exception):
    """The API answered with an error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Backoff:
    """Exponential backoff between reconnects, reset by a successful read."""

    first: float = 0.25
    cap: float = 8.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * (2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class StreamPosition:
    """Where a reader is: the last event id it has seen, and whether the run ended."""

    cursor: str | None = None
    ended: bool = False
    reconnects: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    response: httpx.Response | None = None

    def interrupt(self) -> None:
        """Stop reading now, from another thread: closing the response unblocks the reader."""
        self.stop.set()
        if self.response is not None:
            self.response.close()


class ApiClient:
    def __init__(self, base_url: str, function_key: str | None = None, timeout: float = 30.0):
        headers = {"x-functions-key": function_key} if function_key else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, read=None),
        )

    def close(self) -> None:
        self.http.close()

    def start(self, message: str, conversation_id: str | None = None) -> dict[str, Any]:
        path = AGENT_PATH if conversation_id is None else f"{AGENT_PATH}/{conversation_id}/messages"
        response = self.http.post(path, json={"message": message})
        return _json_or_raise(response)

    def follow(
        self,
        conversation_id: str,
        position: StreamPosition,
        backoff: Backoff | None = None,
        max_reconnects: int = 50,
    ) -> Iterator[dict[str, Any]]:
        """Events of the run from ``position.cursor`` until its terminal event.

        Reconnects with backoff when the connection drops or a response ends before the
        terminal event; stops early when ``position.stop`` is set.
        """
        backoff = backoff or Backoff()
        while not position.ended and not position.stop.is_set():
            try:
                for event in self._one_response(conversation_id, position):
                    backoff.reset()
                    yield event
                if position.ended or position.stop.is_set():
                    return
            except Exception as exc:
                if position.stop.is_set():
                    return  # interrupt() closed the connection under the reader
                if not isinstance(exc, httpx.TransportError):
                    raise
            if position.reconnects >= max_reconnects:
                raise ApiError(0, "gave_up", f"the stream dropped {max_reconnects} times")
            position.reconnects += 1
            if position.stop.wait(backoff.next_delay()):
                return

    def _one_response(
        self, conversation_id: str, position: StreamPosition
    ) -> Iterator[dict[str, Any]]:
        params = {"cursor": position.cursor} if position.cursor else {}
        path = f"{AGENT_PATH}/{conversation_id}/stream"
        with connect_sse(self.http, "GET", path, params=params) as source:
            position.response = source.response
            if source.response.status_code == 204:
                position.ended = True
                return
            if source.response.status_code >= 400:
                source.response.read()
                _json_or_raise(source.response)
            for sse in source.iter_sse():
                if position.stop.is_set():
                    return
                if not sse.data:
                    continue
                event = json.loads(sse.data)
                position.cursor = event["id"]
                if event["type"] in TERMINAL_TYPES:
                    position.ended = True
                yield event
                if position.ended:
                    return


def _json_or_raise(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ApiError(
            response.status_code,
            error.get("code", "http_error"),
            error.get("message", response.reason_phrase),
        )
    return body
