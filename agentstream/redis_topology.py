"""What kind of Redis the app talks to, and redis-py's cluster clients sized like the pools.

``REDIS_CLUSTER=auto`` asks the server once per process (``INFO cluster``); a Redis Cluster (OSS
clustering policy, self-hosted clusters, Valkey) then gets redis-py's cluster clients, which
follow ``MOVED``/``ASK`` and re-learn the slot map after a failover. A proxy-clustered Redis
(Azure Managed Redis with the Enterprise policy) answers like a single server and is reached with
the plain clients; the key layout keeps everything single-slot there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import MaxConnectionsError

from .config import TopologySettings
from .streamlog.capacity import AtCapacity

_lock = threading.Lock()
# How often a command that found its node's connections all taken looks again.
_CONNECTION_BACK_SECONDS = 0.005
# The probe may run on an event loop thread (the first client of a loop is built there): it gets
# short timeouts and no retries, and a failed probe is remembered for a few seconds, so a Redis
# that is down costs each request a fast ConnectionError instead of blocking the loop again.
PROBE_TIMEOUT_SECONDS = 1.0
PROBE_FAILURE_SECONDS = 5.0
_detected: dict[tuple[str, int], bool] = {}
_failed_until: dict[tuple[str, int], float] = {}


def uses_cluster(
    topology: TopologySettings,
    probe_kwargs: dict[str, Any],
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """True when the app should use the cluster clients (``REDIS_CLUSTER``, or ask the server).

    The answer to ``auto`` is remembered for the process; the one probe is a single short
    command on a connection of its own, made the first time a client is needed. While a failed
    probe is remembered (``PROBE_FAILURE_SECONDS``) this raises ``redis.ConnectionError`` at once.
    """
    if topology.cluster != "auto":
        return topology.cluster == "true"
    address = (probe_kwargs["host"], probe_kwargs["port"])
    with _lock:
        if address in _detected:
            return _detected[address]
        if clock() < _failed_until.get(address, 0.0):
            raise redis.ConnectionError("Redis did not answer the topology probe")
        probe = redis.Redis(
            **{
                **probe_kwargs,
                "socket_timeout": PROBE_TIMEOUT_SECONDS,
                "socket_connect_timeout": PROBE_TIMEOUT_SECONDS,
                "retry": None,
            }
        )
        try:
            info = probe.info("cluster")
        except (redis.ConnectionError, redis.TimeoutError):
            _failed_until[address] = clock() + PROBE_FAILURE_SECONDS
            raise
        finally:
            probe.close()
        _failed_until.pop(address, None)
        _detected[address] = bool(int(info.get("cluster_enabled", 0)))
        return _detected[address]


def cluster_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Client keyword arguments as the cluster clients take them (no database number)."""
    return {name: value for name, value in kwargs.items() if name != "db"}


class BoundedAsyncCluster(AsyncRedisCluster):
    """An asyncio cluster client that holds at most ``max_connections`` per node, waiting for one.

    redis-py's cluster node refuses a command at once when its connections are all busy; like the
    plain pools (``_SizedPool``), a command here waits up to ``wait_seconds`` for one of its node's
    ``max_connections`` turns and then raises :class:`AtCapacity`.
    """

    def __init__(self, *args: Any, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._size = kwargs["max_connections"]
        self._turns: dict[str, asyncio.Semaphore] = {}
        self._wait_seconds = wait_seconds

    async def initialize(self, *args: Any, **kwargs: Any) -> Any:
        client = await super().initialize(*args, **kwargs)
        await self._close_discovery_connections()
        return client

    async def refresh_slots(self) -> None:
        """Ask the cluster for its slot map now (after a failover or a slot migration)."""
        await self.nodes_manager.initialize()
        await self._close_discovery_connections()

    async def _close_discovery_connections(self) -> None:
        # redis-py asks a startup node for the slot map through a node object of its own and
        # keeps that connection open: one more than the pool's size on that node, for nothing.
        manager = self.nodes_manager
        await asyncio.gather(
            *(
                node.disconnect()
                for name, node in manager.startup_nodes.items()
                if manager.nodes_cache.get(name) is not node
            ),
            return_exceptions=True,
        )

    @contextlib.asynccontextmanager
    async def turn(self, node_name: str) -> AsyncIterator[None]:
        """One of ``node_name``'s connections, for one command or pipeline."""
        turns = self._turns.get(node_name)
        if turns is None:
            turns = self._turns[node_name] = asyncio.Semaphore(self._size)
        try:
            # asyncio.timeout, not wait_for: a turn acquired just as the wait ran out is given
            # back instead of lost.
            async with asyncio.timeout(self._wait_seconds):
                await turns.acquire()
        except TimeoutError:
            raise AtCapacity("no Redis connection free in this worker") from None
        try:
            yield
        finally:
            turns.release()

    async def _execute_command(self, target_node: Any, *args: Any, **kwargs: Any) -> Any:
        async with self.turn(target_node.name):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._wait_seconds
            while True:
                try:
                    return await super()._execute_command(target_node, *args, **kwargs)
                except MaxConnectionsError:
                    # Raised before anything was sent (redis-py's slot-map refreshes and
                    # redirects use the node's connections outside these turns): wait for one.
                    if loop.time() > deadline:
                        raise AtCapacity("no Redis connection free in this worker") from None
                    await asyncio.sleep(_CONNECTION_BACK_SECONDS)

    async def _determine_slot(self, command: str, *args: Any) -> int:
        # redis-py asks the server (COMMAND GETKEYS, a round trip of its own) for the keys of a
        # command whose keys move, as XREAD's do; every stream read would pay it. XREAD's keys
        # are the first half of what follows STREAMS.
        if command.upper() == "XREAD":
            start = next(i for i, arg in enumerate(args) if arg in (b"STREAMS", "STREAMS")) + 1
            keys = args[start : start + (len(args) - start) // 2]
            slots = {self.keyslot(key) for key in keys}
            if len(slots) == 1:
                return slots.pop()
        return await super()._determine_slot(command, *args)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)
        return _BoundedPipeline(self, transaction)


class _BoundedPipeline(ClusterPipeline):
    """The app's pipelines stay in one slot: they take a turn of that slot's node."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        client = self.cluster_client
        assert isinstance(client, BoundedAsyncCluster)
        queued = self._execution_strategy._command_queue
        if not queued:
            return await super().execute(*args, **kwargs)
        await client.initialize()
        node = client.get_node_from_key(queued[0].args[1])
        commands = [(command.args, command.kwargs) for command in queued]
        async with client.turn(node.name):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + client._wait_seconds
            while True:
                try:
                    return await super().execute(*args, **kwargs)
                except MaxConnectionsError:
                    # As for a command (_execute_command): nothing was sent, so wait for a
                    # connection and send the pipeline again (execute() emptied it).
                    if loop.time() > deadline:
                        raise AtCapacity("no Redis connection free in this worker") from None
                    await asyncio.sleep(_CONNECTION_BACK_SECONDS)
                    for command_args, command_kwargs in commands:
                        self.execute_command(*command_args, **command_kwargs)


def async_cluster_client(
    kwargs: dict[str, Any],
    *,
    name: str,
    size: int,
    wait_seconds: float,
) -> aioredis.Redis:
    """A cluster client for one of the event loop's pools (typed as the plain client it mimics)."""
    client: Any = BoundedAsyncCluster(
        max_connections=size,
        wait_seconds=wait_seconds,
        client_name=name,
        **cluster_kwargs(kwargs),
    )
    return client


def sync_cluster_client(kwargs: dict[str, Any], *, size: int, wait_seconds: float) -> redis.Redis:
    """The entity's cluster client: ``size`` connections per node, waited for like the pool's."""
    client: Any = redis.RedisCluster(
        max_connections=size,
        connection_pool_class=redis.BlockingConnectionPool,
        timeout=wait_seconds,
        **cluster_kwargs(kwargs),
    )
    return client


class _HubSubscriberConnections:
    """The stream hub's subscriber connections: each made on its own, re-authenticated with every
    new token (a subscribed connection is not in a pool, so a pool's re-authentication misses it).
    """

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._kwargs = kwargs
        self._open: weakref.WeakSet[AbstractConnection] = weakref.WeakSet()
        self._provider = kwargs.get("credential_provider")
        self._listening = False

    async def _connect(self, host: str, port: int) -> AbstractConnection:
        """A connection of its own, authenticated and named like the pools' ones.

        No health checks (they would read the replies the subscriber's loop waits for) and no
        automatic retries: the hub reconnects and subscribes again itself.
        """
        if self._provider is not None and not self._listening:
            self._listening = True
            self._provider.on_next(self._authenticate_again)
        options = {**self._kwargs, "host": host, "port": port}
        # RESP3: replies and pushes are told apart, and AUTH is allowed while subscribed.
        client = aioredis.Redis(
            **{**options, "health_check_interval": 0, "retry": None, "protocol": 3}
        )
        connection = client.connection_pool.make_connection()
        await connection.connect()
        self._open.add(connection)
        return connection

    async def _authenticate_again(self, _token: Any) -> None:
        # RESP3 allows AUTH on a subscribed connection; its reply reaches the subscriber's loop.
        assert self._provider is not None
        username, password = await self._provider.get_credentials_async()
        for connection in tuple(self._open):
            if connection.is_connected:
                await connection.send_command("AUTH", username, password, check_health=False)


class ClusterHubShards(_HubSubscriberConnections):
    """The stream hub's subscriptions on a Redis Cluster: each channel at its slot's primary."""

    def __init__(self, cluster: aioredis.Redis, kwargs: dict[str, Any]) -> None:
        super().__init__(cluster_kwargs(kwargs))
        self._cluster: Any = cluster

    async def owner(self, channel: str, *, refresh: bool = False) -> str:
        await self._cluster.initialize()
        if refresh:
            await self._cluster.refresh_slots()
        return str(self._cluster.get_node_from_key(channel).name)

    async def connect(self, node: str) -> AbstractConnection:
        host, port = node.rsplit(":", 1)
        return await self._connect(host, int(port))


class SingleHubShards(_HubSubscriberConnections):
    """The stream hub's subscriptions on one server (or a proxy-clustered Redis): one node."""

    async def owner(self, channel: str, *, refresh: bool = False) -> str:
        return f"{self._kwargs['host']}:{self._kwargs['port']}"

    async def connect(self, node: str) -> AbstractConnection:
        return await self._connect(self._kwargs["host"], self._kwargs["port"])
