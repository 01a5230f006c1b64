"""Writes that count only once a replica has them: ``WAIT`` pipelined with the script call.

Replication is asynchronous: a primary that dies right after acknowledging a write can take the
write with it, and the promoted replica never saw it. So a write that must survive a failover is
sent in one pipeline with ``WAIT <replicas> <timeout>`` on the same connection; the reply says how
many replicas have everything this connection wrote. One round trip, as before; it returns once
the replicas confirmed (or at the timeout).

On a Redis Cluster the pipeline goes to the node that owns the conversation's slot (``WAIT`` has no
key to route by). A slot that moved meanwhile (``MOVED``: a failover or a migration) makes the
cluster client re-learn the slot map, and the call is retried like any other blip.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import PipelineCommand
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.commands.core import AsyncScript, Script

T = TypeVar("T")

# What a cluster node answers while the slot map changes under a failover or a migration.
_TOPOLOGY_ERRORS = (
    redis.exceptions.AskError,  # MOVED is one too
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


class SlotMapChanged(redis.exceptions.ConnectionError):
    """The node answered that it no longer owns the slot (a failover or a migration); the
    client's slot map was learned again, so trying again reaches the owner."""


def node_client(client: redis.Redis, key: str) -> redis.Redis:
    """A plain client on the node that owns ``key`` (``client`` itself when not clustered)."""
    if isinstance(client, redis.RedisCluster):
        node = client.get_node_from_key(key)
        return client.get_redis_connection(node)
    return client


def replicas_to_wait_for(node: redis.Redis) -> int:
    """1 when the node reports a connected replica, else 0 (remembered as below).

    Remembered per node and shared with the HTTP side's :func:`replicas_needed`: a run that
    begins while its replica is momentarily cut off still waits for it (one that stays away costs
    each write ``REDIS_REPLICA_WAIT_MS``), so its writes are kept for repair exactly when the
    replication they rely on is in trouble.
    """
    kwargs = node.connection_pool.connection_kwargs
    address = (kwargs.get("host", ""), int(kwargs.get("port", 0)))
    known = _remembered(address)
    if known is None:
        known = _remember(address, int(node.info("replication").get("connected_slaves", 0)))
    return known


def call_replicated(
    cluster: redis.Redis,
    script: Script,
    keys: list[str],
    args: list[Any],
    *,
    replicas: int,
    timeout_ms: int,
) -> tuple[Any, int]:
    """Run ``script`` and ``WAIT`` for ``replicas`` in one round trip; (reply, replicas that
    confirmed). With ``replicas == 0`` this is the script call alone."""
    if replicas <= 0:
        return script(keys=keys, args=args), 0
    client = node_client(cluster, keys[0])
    for loaded in (True, False):
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        try:
            reply, confirmed = pipe.execute()
            return reply, int(confirmed)
        except redis.exceptions.NoScriptError:
            if not loaded:
                raise
            client.script_load(script.script)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            if isinstance(cluster, redis.RedisCluster):
                _relearn_slots(cluster)  # the node may be gone: ask the others who owns the slot
            raise
        except _TOPOLOGY_ERRORS as exc:
            if isinstance(cluster, redis.RedisCluster):
                _relearn_slots(cluster)
            # Retried like a blip, on the node that owns the slot now.
            raise SlotMapChanged("the slot map changed") from exc
    raise AssertionError("unreachable")


def call_on_node(client: redis.Redis, key: str, operation: Callable[[redis.Redis], T]) -> T:
    """``operation`` on a plain client of the node that owns ``key``. A node that cannot be
    reached makes a cluster client learn the slot map again (a failover may have moved the
    slot), so a retry reaches the new owner."""
    try:
        return operation(node_client(client, key))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        if isinstance(client, redis.RedisCluster):
            _relearn_slots(client)
        raise


def _relearn_slots(cluster: redis.RedisCluster) -> None:
    # While the cluster is still electing this fails; the next try asks again.
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        cluster.nodes_manager.initialize()


async def call_replicated_async(
    client: aioredis.Redis,
    script: AsyncScript,
    keys: list[str],
    args: list[Any],
    *,
    replicas: int,
    timeout_ms: int,
) -> tuple[Any, int]:
    """:func:`call_replicated` for the HTTP side's asyncio clients."""
    if replicas <= 0:
        return await script(keys=keys, args=args), 0
    command = ("EVALSHA", script.sha, len(keys), *keys, *args)
    wait = ("WAIT", replicas, timeout_ms)
    # The client learns a failover slot by slot (from MOVED) but this pipeline goes straight to
    # the node it believes owns the slot: the first call after a failover of that shard finds
    # the old primary. It re-learned the whole map then, so one more try reaches the new one.
    # (Only replayable scripts come through here: START recognises its own earlier run.)
    for moved_already in (False, True):
        try:
            return await _replicated_async(client, script, command, keys[0], wait)
        except SlotMapChanged:
            if moved_already:
                raise
    raise AssertionError("unreachable")


async def _replicated_async(
    client: aioredis.Redis,
    script: AsyncScript,
    command: tuple[Any, ...],
    key: str,
    wait: tuple[Any, ...],
) -> tuple[Any, int]:
    for loaded in (True, False):
        try:
            if isinstance(client, AsyncRedisCluster):
                reply, confirmed = await _node_pipeline(client, key, command, wait)
            else:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.execute_command(*command)
                    pipe.execute_command(*wait)
                    reply, confirmed = await pipe.execute()
            return reply, int(confirmed)
        except redis.exceptions.NoScriptError:
            if not loaded:
                raise
            await client.script_load(script.script)
    raise AssertionError("unreachable")


async def _node_pipeline(
    client: AsyncRedisCluster, key: str, *commands: tuple[Any, ...]
) -> list[Any]:
    """Commands in one round trip on the connection of the node that owns ``key``."""
    node = await _owner(client, key)
    turn = getattr(client, "turn", None)
    async with turn(node.name) if turn else contextlib.nullcontext():
        pipeline = [PipelineCommand(i, *command) for i, command in enumerate(commands)]
        await node.execute_pipeline(pipeline)
    results = [command.result for command in pipeline]
    for result in results:
        if isinstance(result, (*_TOPOLOGY_ERRORS, redis.exceptions.ConnectionError)):
            # The slot moved or the node is gone: re-learn the slot map and try again later.
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await client.nodes_manager.initialize()
            raise SlotMapChanged("the slot map changed") from result
        if isinstance(result, Exception):
            raise result
    return results


# node address -> (replicas it reported, when): asked once a minute, not per request, while the
# node has a replica; without one, again after a second, so a replica that connects (after a
# failover the old primary rejoins as one) is waited for at once.
_REPORTED_TTL_SECONDS = 60.0
_NO_REPLICA_TTL_SECONDS = 1.0
_reported: dict[tuple[str, int], tuple[int, float]] = {}


def _remembered(address: tuple[str, int]) -> int | None:
    known = _reported.get(address)
    if known is None:
        return None
    replicas, when = known
    ttl = _REPORTED_TTL_SECONDS if replicas else _NO_REPLICA_TTL_SECONDS
    return replicas if time.monotonic() - when <= ttl else None


def _remember(address: tuple[str, int], connected: int) -> int:
    _reported[address] = (min(1, connected), time.monotonic())
    return min(1, connected)


async def replicas_needed(client: aioredis.Redis, key: str, configured: int | None) -> int:
    """``REDIS_MIN_REPLICAS``, or when unset: 1 if the node owning ``key`` reports replicas."""
    if configured is not None:
        return configured
    if isinstance(client, AsyncRedisCluster):
        node = await _owner(client, key)
        address = (node.host, int(node.port))
    else:
        kwargs = client.connection_pool.connection_kwargs
        address = (kwargs.get("host", ""), int(kwargs.get("port", 0)))
    known = _remembered(address)
    if known is None:
        if isinstance(client, AsyncRedisCluster):
            info = await client.info("replication", target_nodes=node)
        else:
            info = await client.info("replication")
        known = _remember(address, int(info.get("connected_slaves", 0)))
    return known


async def _owner(client: AsyncRedisCluster, key: str) -> Any:
    """The node that owns ``key``'s slot (the client learns the slot map on first use)."""
    await client.initialize()
    try:
        return client.get_node_from_key(key)
    except redis.exceptions.SlotNotCoveredError:
        raise redis.exceptions.ConnectionError("no node owns the slot yet") from None
