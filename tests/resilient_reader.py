"""A stream reader that behaves like a careful client: it resumes from its last id through
dropped connections, 503s and restarts until it has the run's terminal event."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import httpx
from httpx_sse import connect_sse

from .api_client import AGENT, TERMINAL

RECONNECT_DELAY_SECONDS = 0.2  # the client's own backoff between attempts


class ResilientReader(threading.Thread):
    def __init__(self, base_url: str, cid: str, *, give_up_after: float = 180.0) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.cid = cid
        self.give_up_after = give_up_after
        self.events: list[dict[str, Any]] = []
        self.responses = 0
        self.saw_text = threading.Event()

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] in TERMINAL

    def run(self) -> None:
        deadline = time.monotonic() + self.give_up_after
        timeout = httpx.Timeout(30.0, connect=2.0)
        with httpx.Client(base_url=self.base_url, timeout=timeout) as http:
            while not self.finished and time.monotonic() < deadline:
                # The server going away mid-response is expected: resume from the last id.
                with contextlib.suppress(httpx.HTTPError):
                    self._read_once(http)
                if not self.finished:
                    time.sleep(RECONNECT_DELAY_SECONDS)

    def _read_once(self, http: httpx.Client) -> None:
        params = {"cursor": self.events[-1]["id"]} if self.events else {"cursor": "0"}
        path = f"{AGENT}/conversations/{self.cid}/stream"
        with connect_sse(http, "GET", path, params=params) as source:
            self.responses += 1
            if source.response.status_code != 200:
                return  # 503 while Redis restarts; anything else fails the test's assertions
            for sse in source.iter_sse():
                if not sse.data:
                    continue
                event = json.loads(sse.data)
                self.events.append(event)
                if event["type"] == "message.delta":
                    self.saw_text.set()
                if event["type"] in TERMINAL:
                    return
