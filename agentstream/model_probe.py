"""Whether the configured model endpoint answers, for ``/api/health``.

The answer is a short status that never contains the endpoint, a key or exception text. It is
cached for :data:`CACHE_SECONDS` so frequent health checks do not hammer the model, and the
probe (a ``GET`` of the models list, which costs no tokens) gives up after
:data:`PROBE_TIMEOUT_SECONDS`. Any HTTP answer means reachable, except ``401``/``403`` to a
request that carried a key, which is reported as rejected credentials. With Microsoft Entra ID
no token is fetched for the probe; the ``401`` such a request gets still proves reachability.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from .config import ModelSettings

PROBE_TIMEOUT_SECONDS = 3.0
CACHE_SECONDS = 30.0

_cache: dict[tuple[str | None, ...], tuple[float, str]] = {}


async def model_status(
    model: ModelSettings | None, clock: Callable[[], float] = time.monotonic
) -> str:
    """``ok``, ``not configured``, ``unreachable (...)``, ``rejected the credentials (HTTP n)``
    or ``unavailable (HTTP n)``."""
    if model is None:
        return "not configured"
    key = (model.provider, model.endpoint, model.base_url, model.model)
    cached = _cache.get(key)
    if cached is not None and clock() - cached[0] < CACHE_SECONDS:
        return cached[1]
    status = await _probe(model)
    _cache[key] = (clock(), status)
    return status


async def _probe(model: ModelSettings) -> str:
    url, headers = _probe_request(model)
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_SECONDS) as http:
            response = await http.get(url, headers=headers)
    except httpx.TimeoutException:
        return "unreachable (timed out)"
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    if response.status_code in (401, 403) and headers:
        return f"rejected the credentials (HTTP {response.status_code})"
    if response.status_code >= 500:
        return f"unavailable (HTTP {response.status_code})"
    return "ok"


def _probe_request(model: ModelSettings) -> tuple[str, dict[str, str]]:
    if model.provider == "azure":
        endpoint = (model.endpoint or "").rstrip("/")
        url = f"{endpoint}/openai/models?api-version={model.api_version}"
        return url, ({"api-key": model.api_key} if model.api_key else {})
    base = (model.base_url or "https://api.openai.com/v1").rstrip("/")
    return f"{base}/models", {"Authorization": f"Bearer {model.api_key}"}
