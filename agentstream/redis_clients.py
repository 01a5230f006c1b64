"""One Redis connection pool per process for each side.

The entity (sync, worker thread) shares one synchronous pool; HTTP readers share one asyncio pool
per event loop (redis.asyncio connections belong to the loop that opened them).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.retry
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.credentials import CredentialProvider

from .config import RedisSettings, Settings, get_settings

_REDIS_SCOPE = "https://redis.azure.com/.default"
# Above the longest XREAD BLOCK a reader issues, so a blocked read is never cut by the socket.
_SOCKET_TIMEOUT_MARGIN = 30.0


class EntraIdCredentialProvider(CredentialProvider):
    """Microsoft Entra ID tokens as Redis passwords (Azure Managed Redis / Azure Cache for Redis).

    The token is fetched on every new connection; azure-identity caches it until shortly before
    it expires, so this costs nothing on the hot path.
    """

    def __init__(self, username: str, credential: Any | None = None) -> None:
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self._username = username
        self._credential = credential

    def get_credentials(self) -> tuple[str, str]:
        return self._username, self._credential.get_token(_REDIS_SCOPE).token


def client_kwargs(settings: RedisSettings, socket_timeout: float | None) -> dict[str, Any]:
    kwargs = settings.connection_kwargs()
    kwargs.update(
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
    )
    if settings.use_entra_id:
        kwargs.pop("username", None)
        kwargs["credential_provider"] = EntraIdCredentialProvider(settings.username or "")
    return kwargs


_sync_lock = threading.Lock()
_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def sync_redis(settings: Settings | None = None) -> redis.Redis:
    """The process-wide synchronous client (thread-safe pool)."""
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            settings = settings or get_settings()
            # No automatic retries here: the writer retries its own idempotent scripts for a
            # budget (streamlog.retry). Its commands are quick, so a short socket timeout bounds
            # one try on a connection that went silent.
            _sync_client = redis.Redis(
                **client_kwargs(settings.redis, socket_timeout=5.0),
                retry=redis.retry.Retry(NoBackoff(), 0),
            )
        return _sync_client


def async_redis(settings: Settings | None = None) -> aioredis.Redis:
    """The asyncio client of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        settings = settings or get_settings()
        timeout = settings.keepalive_seconds + _SOCKET_TIMEOUT_MARGIN
        # Reads are safe to retry; keep the retries short so an outage is a quick 503.
        client = aioredis.Redis(
            **client_kwargs(settings.redis, socket_timeout=timeout),
            retry=AsyncRetry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
        _async_clients[loop] = client
    return client
