"""A small HTTP client for the end-to-end tests, built on httpx and httpx-sse."""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpx_sse import connect_sse

TERMINAL = {"run.completed", "run.failed", "run.cancelled"}
AGENT = "/api/agents/travelplanner"


class Api:
    def __init__(self, base_url: str, agent: str = "travelplanner") -> None:
        self.base_url = base_url
        self.agent = f"/api/agents/{agent}"
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def start(self, message: str, **headers: str) -> httpx.Response:
        return self.http.post(
            f"{self.agent}/conversations", json={"message": message}, headers=headers
        )

    def send(self, cid: str, message: str, **headers: str) -> httpx.Response:
        return self.http.post(
            f"{self.agent}/conversations/{cid}/messages", json={"message": message}, headers=headers
        )

    def stream_path(self, cid: str) -> str:
        return f"{self.agent}/conversations/{cid}/stream"

    def read_sse(
        self,
        cid: str,
        *,
        cursor: str | None = None,
        last_event_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events of one SSE response; stop after ``limit`` events (closing the connection)."""
        params = {"cursor": cursor} if cursor is not None else {}
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        events: list[dict[str, Any]] = []
        with connect_sse(
            self.http, "GET", self.stream_path(cid), params=params, headers=headers
        ) as source:
            source.response.raise_for_status()
            for sse in source.iter_sse():
                if not sse.data:
                    continue  # the retry hint and keep-alive comments
                event = json.loads(sse.data)
                assert event["id"] == sse.id and event["type"] == sse.event
                events.append(event)
                if limit is not None and len(events) >= limit:
                    break
        return events

    def read_run(self, cid: str, cursor: str | None = None) -> list[dict[str, Any]]:
        """Read (resuming after max-duration ends) until a terminal event."""
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in TERMINAL:
            last = events[-1]["id"] if events else cursor
            events.extend(self.read_sse(cid, cursor=last))
        return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "message.delta")


def started(response: httpx.Response) -> dict[str, Any]:
    """The body of a start or send answer, which must be ``202 Accepted``."""
    assert response.status_code == 202, response.text
    return response.json()
