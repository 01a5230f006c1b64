"""Talks to the HTTP API and follows a stream across disconnects."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import connect_sse

from agentstream.backoff import RECONNECT, Backoff
from agentstream.events import STREAM_TRUNCATED, TERMINAL_TYPES

DEFAULT_AGENT = "travelplanner"

STREAM_READ_TIMEOUT = 60.0  # well above the server's keep-alive interval (15 s by default)
RETRYABLE_STATUSES = {502, 503, 504}
MAX_RETRY_AFTER = 30.0


class ApiError(Exception):
    """The API answered with an error body."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Unreachable(Exception):
    """Nothing answered at the app's address."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach the app at {base_url} ({reason})")


class ServerLost(Exception):
    """The stream's server stopped answering and reconnecting did not bring it back."""

    def __init__(self, base_url: str, reason: str, attempts: int, cursor: str | None) -> None:
        super().__init__(
            f"the app at {base_url} stopped answering ({reason}); "
            f"gave up after {attempts} reconnect attempts"
        )
        self.cursor = cursor


def describe(exc: BaseException) -> str:
    """A short, human reason for a transport failure (no stack, no URL)."""
    text = str(exc).lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, httpx.ReadTimeout):
        return f"no data for {STREAM_READ_TIMEOUT:.0f} s"
    if isinstance(exc, httpx.ConnectError):
        if "refused" in text:
            return "connection refused"
        if "name" in text and ("resolution" in text or "not known" in text or "service" in text):
            return "unknown host"
        return "could not connect"
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.code}"
    return "the connection was closed"


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
    def __init__(
        self,
        base_url: str,
        function_key: str | None = None,
        timeout: float = 30.0,
        token: str | None = None,
        agent: str = DEFAULT_AGENT,
    ):
        self.agent = agent
        self.conversations = f"/api/agents/{quote(agent, safe='')}/conversations"
        headers = {"x-functions-key": function_key} if function_key else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, read=STREAM_READ_TIMEOUT),
        )

    def close(self) -> None:
        self.http.close()

    def check_reachable(self) -> None:
        """Raise :class:`Unreachable` when nothing answers at the base URL (any answer is fine)."""
        try:
            self.http.get("/api/health")
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, describe(exc)) from None

    def start(self, message: str, conversation_id: str | None = None) -> dict[str, Any]:
        path = self.conversations
        if conversation_id is not None:
            path = f"{path}/{conversation_id}/messages"
        try:
            response = self.http.post(path, json={"message": message})
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, describe(exc)) from None
        return _json_or_raise(response)

    def follow(
        self,
        conversation_id: str,
        position: StreamPosition,
        on_retry: Callable[[str], None] | None = None,
        backoff: Backoff = RECONNECT,
        max_attempts: int = 5,
    ) -> Iterator[dict[str, Any]]:
        """Events of the run from ``position.cursor`` until its terminal event.

        A response that ends before the terminal event, or a connection that breaks after
        events arrived, is resumed at once from the last cursor. Failures to get events back
        (refused connections, ``502``/``503``/``504``) are retried with backoff, announced
        through ``on_retry``, at most ``max_attempts`` times in a row; then :class:`ServerLost`
        (or :class:`Unreachable` when the very first connection failed). Stops early when
        ``position.stop`` is set.
        """
        failures = 0
        connected = False
        while not position.ended and not position.stop.is_set():
            progressed = False
            try:
                for event in self._one_response(conversation_id, position):
                    connected = progressed = True
                    yield event
                connected = True
                if position.ended or position.stop.is_set():
                    return
                failures = 0  # a clean end before the terminal event: resume right away
            except (httpx.TransportError, ApiError) as exc:
                if position.stop.is_set():
                    return  # interrupt() closed the connection under the reader
                if isinstance(exc, ApiError) and exc.status not in RETRYABLE_STATUSES:
                    raise
                if not connected and isinstance(exc, httpx.TransportError):
                    raise Unreachable(self.base_url, describe(exc)) from None
                connected = True
                if progressed:  # it broke mid-response: resume at once
                    failures = 0
                else:
                    failures += 1
                    if failures > max_attempts:
                        raise ServerLost(
                            self.base_url, describe(exc), max_attempts, position.cursor
                        ) from None
                    delay = backoff.delay(failures)
                    if isinstance(exc, ApiError) and exc.retry_after is not None:
                        delay = min(MAX_RETRY_AFTER, max(delay, exc.retry_after))
                    if on_retry is not None:
                        on_retry(
                            f"[{describe(exc)}; reconnecting… (attempt {failures} of "
                            f"{max_attempts}, in {delay:.1f} s)]"
                        )
                    if position.stop.wait(delay):
                        return
            position.reconnects += 1

    def _one_response(
        self, conversation_id: str, position: StreamPosition
    ) -> Iterator[dict[str, Any]]:
        params = {"cursor": position.cursor} if position.cursor else {}
        path = f"{self.conversations}/{conversation_id}/stream"
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
                if event["type"] == STREAM_TRUNCATED:  # what the cursor needs next is gone
                    raise ApiError(410, event["code"], event["message"])
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
            _retry_after(response),
        )
    return body


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None
