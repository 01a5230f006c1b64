"""What the travel planner's tools share: their settings and one HTTP client per process."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from agentstream.config import ToolSettings, get_settings
from agentstream.tools import ToolError


def tool_settings() -> ToolSettings:
    return get_settings().tools


_lock = threading.Lock()
_http: httpx.Client | None = None


def http_client() -> httpx.Client:
    """One client per process; entity batches run on several threads, so it is built under a
    lock (two threads starting their first runs together would each build, and leak, one)."""
    global _http
    with _lock:
        if _http is None:
            _http = httpx.Client(timeout=tool_settings().timeout_seconds, follow_redirects=True)
        return _http


def get_json(url: str, params: dict[str, Any], service: str) -> Any:
    """GET a JSON document, turning every transport or HTTP failure into a :class:`ToolError`."""
    try:
        response = http_client().get(url, params=params)
    except httpx.TimeoutException:
        raise ToolError(f"the {service} did not answer in time") from None
    except httpx.HTTPError:
        raise ToolError(f"the {service} could not be reached") from None
    if response.status_code >= 400:
        raise ToolError(f"the {service} answered with HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ToolError(f"the {service} sent a response that is not JSON") from None
