"""A careful stream client for the fault tests: it resumes from its last id after any cut, on the
next of its workers, and notes every status it got and which worker served each response."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import httpx
from httpx_sse import connect_sse

from .api_client import AGENT, TERMINAL


class CursorReader(threading.Thread):
    """Reads one conversation from ``cursor`` until its terminal event (at most 120 s)."""

    def __init__(self, urls: list[str], cid: str, cursor: str, *, first: int = 0) -> None:
        super().__init__(daemon=True)
        self.urls, self.current, self.cid, self.cursor = urls, first, cid, cursor
        self.events: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.served_by: list[int] = []
        self.started_text = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            timeout = httpx.Timeout(30, connect=2)
            with (
                httpx.Client(base_url=self.urls[self.current], timeout=timeout) as http,
                contextlib.suppress(httpx.HTTPError),
            ):
                self._read_once(http)
            if self.events and self.events[-1]["type"] in TERMINAL:
                return
            # The response was cut or the worker went away: go on at the next worker.
            self.current = (self.current + 1) % len(self.urls)
            time.sleep(0.1)  # the client's own backoff between attempts

    def _read_once(self, http: httpx.Client) -> None:
        cursor = self.events[-1]["id"] if self.events else self.cursor
        path = f"{AGENT}/conversations/{self.cid}/stream"
        with connect_sse(http, "GET", path, params={"cursor": cursor}) as source:
            self.statuses.append(source.response.status_code)
            if source.response.status_code != 200:
                source.response.read()
                return
            self.served_by.append(self.current)
            for sse in source.iter_sse():
                if sse.data:
                    self.events.append(json.loads(sse.data))
                    if self.events[-1]["type"] == "message.delta":
                        self.started_text.set()
