"""Redis connection pools, each of a fixed size (``REDIS_MAX_CONNECTIONS`` and the stream settings).

The entity (sync, worker thread) shares one synchronous pool. Each event loop of the HTTP side has
three asyncio pools, so stream readers can never take the connections POST, status and health
need: request commands; stream opening checks and catch-up reads; the stream hub's reads.
A pool that stays empty for ``REDIS_POOL_TIMEOUT_SECONDS`` raises :class:`AtCapacity`.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.exceptions
import redis.retry
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from .backoff import REDIS_COMMAND, REDIS_WRITE, RedisBackoff
from .config import RedisSettings, Settings, get_settings
from .redis_auth import EntraTokenProvider
from .redis_topology import (
    ClusterHubShards,
    SingleHubShards,
    async_cluster_client,
    sync_cluster_client,
    uses_cluster,
)
from .streamlog.capacity import AtCapacity
from .streamlog.hub import HubShards, StreamHub
from .telemetry import instrument_redis

# Above the longest XREAD BLOCK a reader issues, so a blocked read is never cut by the socket.
_SOCKET_TIMEOUT_MARGIN = 30.0

_entra_lock = threading.Lock()
_entra_providers: dict[str, EntraTokenProvider] = {}


def entra_provider(username: str, credential: Any | None = None) -> EntraTokenProvider:
    """The process's Entra ID token provider: one token refresher for every client.

    ``credential`` (``DefaultAzureCredential`` when not given) counts on the first call only.
    """
    with _entra_lock:
        provider = _entra_providers.get(username)
        if provider is None:
            provider = _entra_providers[username] = EntraTokenProvider(username, credential)
        return provider


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
        kwargs["credential_provider"] = entra_provider(settings.username or "")
    return kwargs


class _SizedPool(aioredis.BlockingConnectionPool):
    """A fixed number of connections; a caller waits a moment, then gets :class:`AtCapacity`.

    redis-py reports a wait that ran out as a ``ConnectionError``, which would read as "Redis is
    down"; here it is told apart, because Redis is fine and the worker is merely busy.
    """

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except redis.exceptions.ConnectionError as exc:
            if isinstance(exc.__cause__, asyncio.TimeoutError):
                raise AtCapacity("no Redis connection free in this worker") from None
            raise


class _Clients:
    """The asyncio clients of one event loop (redis.asyncio connections belong to their loop)."""

    def __init__(self, settings: Settings) -> None:
        pools = settings.pools
        timeout = settings.keepalive_seconds + _SOCKET_TIMEOUT_MARGIN
        kwargs = client_kwargs(settings.redis, socket_timeout=timeout)
        # Reads are safe to retry, and so is every script (each recognises its own earlier
        # execution); keep the retries short so an outage is a quick 503.
        kwargs["retry"] = AsyncRetry(RedisBackoff(REDIS_COMMAND), 2)
        self.cluster = is_cluster(settings)
        if self.cluster:
            # A primary's failover is expected there and takes a few seconds (the replica waits
            # out the node timeout, then is elected): the cluster client re-learns the slot map
            # between tries, so a request rides it out instead of answering 503.
            kwargs["retry"] = AsyncRetry(RedisBackoff(REDIS_WRITE), 12)

        def client(name: str, size: int, wait: float) -> aioredis.Redis:
            if self.cluster:
                return async_cluster_client(kwargs, name=name, size=size, wait_seconds=wait)
            pool = _SizedPool(max_connections=size, timeout=wait, client_name=name, **kwargs)
            # Named again here so the client subscribes the pool to token rotation.
            provider = kwargs.get("credential_provider")
            return aioredis.Redis(connection_pool=pool, credential_provider=provider)

        self.requests = instrument_redis(
            client("agentstream-requests", pools.request_connections, pools.wait_seconds)
        )
        # Opening checks and catch-up reads are short and non-blocking: a few connections serve
        # every reader in turn. A burst of readers queues for them, so they wait longer than a
        # request does before the worker says it is at capacity.
        self.readers = client(
            "agentstream-readers", pools.catch_up_connections, 10 * pools.wait_seconds
        )
        # One blocking read per reader (STREAM_HUB=false, or Redis refuses the hub's reads): as
        # many connections as readers are admitted. redis-py opens them only when used.
        self.blocking = client(
            "agentstream-blocking-readers", pools.max_readers, pools.wait_seconds
        )
        # The hub: per node, one subscriber connection (made by the shards, not pooled) and the
        # rest of STREAM_HUB_CONNECTIONS for its non-blocking reads, which queue for them.
        self.hub = client("agentstream-hub", pools.hub_connections - 1, 10 * pools.wait_seconds)
        hub_kwargs = {**kwargs, "client_name": "agentstream-hub"}
        self.hub_shards: HubShards = (
            ClusterHubShards(self.hub, hub_kwargs) if self.cluster else SingleHubShards(hub_kwargs)
        )


def is_cluster(settings: Settings) -> bool:
    """Whether this process uses redis-py's cluster clients (``REDIS_CLUSTER``)."""
    probe = client_kwargs(settings.redis, socket_timeout=5.0)
    return uses_cluster(settings.topology, probe)


_sync_lock = threading.Lock()
_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = (
    weakref.WeakKeyDictionary()
)


def sync_redis(settings: Settings | None = None) -> redis.Redis:
    """The process-wide synchronous client (thread-safe pool of ``REDIS_MAX_CONNECTIONS``)."""
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            settings = settings or get_settings()
            kwargs = client_kwargs(settings.redis, socket_timeout=5.0)
            if is_cluster(settings):
                _sync_client = instrument_redis(
                    sync_cluster_client(
                        kwargs,
                        size=settings.pools.request_connections,
                        wait_seconds=settings.pools.wait_seconds * 4,
                    )
                )
                return _sync_client
            pool = redis.BlockingConnectionPool(
                max_connections=settings.pools.request_connections,
                timeout=settings.pools.wait_seconds * 4,
                # The writer's commands are quick: a short socket timeout bounds one try on a
                # connection that went silent, well inside the writer's retry budget.
                **kwargs,
            )
            # No automatic retries here: the writer retries its own idempotent scripts for a
            # budget (streamlog.retry), which makes a retried append safe.
            _sync_client = instrument_redis(
                redis.Redis(
                    connection_pool=pool,
                    retry=redis.retry.Retry(NoBackoff(), 0),
                    credential_provider=kwargs.get("credential_provider"),
                )
            )
        return _sync_client


def _clients(settings: Settings | None) -> _Clients:
    loop = asyncio.get_running_loop()
    clients = _async_clients.get(loop)
    if clients is None:
        clients = _async_clients[loop] = _Clients(settings or get_settings())
    return clients


def async_redis(settings: Settings | None = None) -> aioredis.Redis:
    """The running loop's client for request commands (POST, status, cancel, health)."""
    return _clients(settings).requests


def reader_redis(settings: Settings | None = None) -> aioredis.Redis:
    """The running loop's client for stream opening checks and catch-up reads."""
    return _clients(settings).readers


def blocking_reader_redis(settings: Settings | None = None) -> aioredis.Redis:
    """The running loop's client for readers with a blocking read of their own."""
    return _clients(settings).blocking


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub] = weakref.WeakKeyDictionary()


def stream_hub(settings: Settings) -> StreamHub:
    """The running event loop's hub."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        clients = _clients(settings)
        hub = _hubs[loop] = StreamHub(
            clients.hub, clients.hub_shards, queue_limit=settings.pools.reader_queue_events
        )
    return hub


def live_hubs() -> list[StreamHub]:
    """The stream hubs of this process's event loops (for the hub-connections metric)."""
    return list(_hubs.values())
