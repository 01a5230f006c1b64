"""The stream hub's subscriptions follow a slot that moves to another node of a Redis Cluster."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from agentstream.events import MESSAGE_DELTA, RUN_QUEUED
from agentstream.streamlog.keys import group_tag, notice_channel, stream_key

from .redis_cluster import ClusterNode, running_cluster
from .streamlog_helpers import new_conversation_id, run_log
from .test_failover import migrate_slot
from .test_stream_hub import close_hub, make_hub, taken, until


def subscribers_on(node: ClusterNode, cid: str) -> int:
    with node.client() as client:
        channel = notice_channel(group_tag(cid))
        return int(client.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1])


@pytest.mark.slow  # a cluster of its own
async def test_a_subscription_moves_with_its_slot_and_its_reader_goes_on() -> None:
    with running_cluster(3, 0) as cluster:
        writer = redis.RedisCluster(host="127.0.0.1", port=cluster.port, decode_responses=True)
        hub, clients = make_hub(cluster.port, cluster="true")
        try:
            cid = new_conversation_id()
            log = run_log(writer, cid, "run")
            start = log.append(RUN_QUEUED, {"message": "go"}).id
            slot = key_slot(stream_key(cid).encode())
            source = cluster.primary_of_slot(slot)
            subscription, _ = hub.join(stream_key(cid), start)
            await until(lambda: subscribers_on(source, cid) == 1)
            log.append(MESSAGE_DELTA, {"text": "before"})
            await taken(subscription, 1)

            # Resharding moves the group's slot: the source node tells its subscriber the channel
            # is gone (sunsubscribe), and the hub subscribes again where the slot went.
            target = migrate_slot(cluster, slot, source)
            await until(lambda: subscribers_on(target, cid) == 1)
            assert subscribers_on(source, cid) == 0
            after = log.append(MESSAGE_DELTA, {"text": "after"}).id
            assert [e.id for e in await taken(subscription, 1)] == [after]
            assert not subscription.ended
            hub.leave(subscription)
        finally:
            await close_hub(hub, clients)
            writer.close()
