"""The bounded cluster client's pipelines wait for a connection redis-py took outside the turns.

redis-py uses a node's connections for its own slot-map refreshes and redirects, outside the
client's turns; a command meeting that waits (``BoundedAsyncCluster._execute_command``), and so
must a pipeline: the stream route opens every read with one, and right after a failover it met
``MaxConnectionsError`` and answered ``503 redis_unavailable`` (a failover test under load).
"""

from __future__ import annotations

import asyncio

from agentstream.redis_topology import async_cluster_client

from .redis_cluster import running_cluster


async def test_a_pipeline_waits_for_a_connection_taken_outside_the_turns() -> None:
    with running_cluster(1, 0) as cluster:
        kwargs = {"host": "127.0.0.1", "port": cluster.port, "decode_responses": True}
        client = async_cluster_client(kwargs, name="test", size=1, wait_seconds=5)
        try:
            await client.initialize()
            node = client.get_default_node()
            taken = node.acquire_connection()  # as a slot-map refresh of redis-py's own does
            asyncio.get_running_loop().call_later(0.05, node.release, taken)
            async with client.pipeline(transaction=True) as pipe:
                pipe.set("{t}:a", "1")
                pipe.get("{t}:a")
                assert await pipe.execute() == [True, "1"]
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("{t}:a")
                assert await pipe.execute() == ["1"]
        finally:
            await client.aclose()
