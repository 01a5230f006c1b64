"""Failover of the primary that holds a live conversation, on a real 3-shard cluster with a replica
each: ``kill -9`` at random points and a graceful ``CLUSTER FAILOVER``. Nothing acknowledged is
lost, readers resume by cursor and see exactly what ``XRANGE`` holds afterwards."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from redis.crc import key_slot

from agentstream.streamlog.keys import stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, TERMINAL
from .cursor_reader import CursorReader
from .devhost_process import running_devhost
from .redis_cluster import ClusterNode, RedisClusterUnderTest, running_cluster
from .standins import scripted_services

READERS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterUnderTest]:
    with running_cluster(3, 1) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(cluster: RedisClusterUnderTest) -> Iterator[str]:
    model = create_model_app(delay_seconds=0.001)
    with scripted_services(model) as services:
        env = {
            **services,
            # Every node, so the app can still reach the cluster when the one it was given dies.
            "REDIS_CONNECTION_STRING": cluster.connection_string,
            "STREAM_KEEPALIVE_SECONDS": "1",
        }
        with running_devhost(env) as url:
            yield url


def restart(cluster: RedisClusterUnderTest, node: ClusterNode) -> None:
    """The killed node comes back as a replica of the primary that took its place."""
    node.start()

    def caught_up() -> bool:
        with node.client() as client:
            return client.info("replication").get("master_link_status") == "up"

    cluster.wait_until(caught_up, "the restarted node replicates again")
    cluster.wait_until(cluster.healthy, "cluster_state:ok everywhere")


def check_run(cluster: RedisClusterUnderTest, cid: str, readers: list[CursorReader]) -> None:
    store = redis.RedisCluster(host="127.0.0.1", port=cluster.port, decode_responses=True)
    try:
        stored = [{"id": i, **f} for i, f in store.xrange(stream_key(cid))]
    finally:
        store.close()
    for reader in readers:
        assert all(status == 200 for status in reader.statuses), reader.statuses
        events = reader.events
        assert events and events[-1]["type"] in TERMINAL
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert [e["id"] for e in events] == [e["id"] for e in stored[1:]]
        assert events == readers[0].events
    assert [int(e["seq"]) for e in stored] == list(range(len(stored)))
    assert sum(1 for e in stored if e["type"] in TERMINAL) == 1


def live_run(base_url: str, message: str) -> tuple[str, list[CursorReader]]:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        posted = http.post(f"{AGENT}/conversations", json={"message": message})
    assert posted.status_code == 202, posted.text
    body = posted.json()
    readers = [
        CursorReader([base_url], body["conversation_id"], body["cursor"]) for _ in range(READERS)
    ]
    for reader in readers:
        reader.start()
    assert readers[0].started_text.wait(30), "the run never streamed text"
    return body["conversation_id"], readers


def finish(readers: list[CursorReader]) -> None:
    for reader in readers:
        reader.join(timeout=120)
        assert not reader.is_alive(), "a reader never got its terminal event"


def next_message_is_accepted(base_url: str, cid: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        again = http.post(f"{AGENT}/conversations/{cid}/messages", json={"message": "thanks"})
    assert again.status_code == 202, again.text


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(10))
def test_kill_9_of_the_primary_holding_a_live_run_loses_nothing(
    cluster: RedisClusterUnderTest, base_url: str, trial: int
) -> None:
    chance = random.Random(trial)
    cid, readers = live_run(base_url, "Plan 3 days in Lisbon [[slow]]")
    primary = cluster.primary_of_slot(key_slot(stream_key(cid).encode()))
    time.sleep(chance.uniform(0.0, 0.6))  # a random point of the run (a fault, not a wait)
    primary.kill()
    finish(readers)
    restart(cluster, primary)
    check_run(cluster, cid, readers)
    next_message_is_accepted(base_url, cid)


def replica_of(cluster: RedisClusterUnderTest, primary: ClusterNode) -> ClusterNode:
    for node in cluster.live_nodes():
        with node.client() as client:
            info = client.info("replication")
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
            return node
    raise LookupError("the primary has no replica")


@pytest.mark.slow
def test_writes_no_replica_confirmed_are_written_again_with_their_ids_after_a_failover(
    cluster: RedisClusterUnderTest, base_url: str
) -> None:
    """The replica is frozen (SIGSTOP) and cut off while the run writes, so the primary
    acknowledges entries no replica has; then the primary dies and the replica takes over
    without them. The writer notices at its next append and writes them again with their ids."""
    cid, readers = live_run(base_url, "Plan 3 days in Rome [[slow]]")
    primary = cluster.primary_of_slot(key_slot(stream_key(cid).encode()))
    replica = replica_of(cluster, primary)
    key = stream_key(cid)
    with primary.client() as client:
        # Frozen, and its link cut: what the primary writes from now on cannot reach it, not
        # even into its socket buffer.
        replica.freeze()
        client.client_kill_filter(_type="replica")
        frozen_at = client.xrevrange(key, count=1)[0][0]

        def unreplicated() -> list[str]:
            return [entry_id for entry_id, _ in client.xrange(key, min=f"({frozen_at}")]

        # Entries the replica cannot have: the run goes on writing meanwhile.
        cluster.wait_until(lambda: len(unreplicated()) >= 3, "writes the replica misses")
        lost_with_the_primary = unreplicated()
    primary.kill()
    replica.thaw()
    finish(readers)
    restart(cluster, primary)
    check_run(cluster, cid, readers)
    store = redis.RedisCluster(host="127.0.0.1", port=cluster.port, decode_responses=True)
    try:
        stored = {entry_id for entry_id, _ in store.xrange(key)}
    finally:
        store.close()
    # The replica that took over never had these; they are there again, with the same ids.
    assert set(lost_with_the_primary) <= stored
    next_message_is_accepted(base_url, cid)


@pytest.mark.slow
def test_a_graceful_cluster_failover_mid_run_loses_nothing(
    cluster: RedisClusterUnderTest, base_url: str
) -> None:
    cid, readers = live_run(base_url, "Plan 3 days in Paris [[slow]]")
    primary = cluster.primary_of_slot(key_slot(stream_key(cid).encode()))
    replica = replica_of(cluster, primary)
    with replica.client() as client:
        client.execute_command("CLUSTER FAILOVER")
    cluster.wait_until(
        lambda: cluster.primary_of_slot(key_slot(stream_key(cid).encode())) is replica,
        "the replica took over",
    )
    finish(readers)
    cluster.wait_until(cluster.healthy, "cluster_state:ok everywhere")
    check_run(cluster, cid, readers)
    next_message_is_accepted(base_url, cid)


def migrate_slot(cluster: RedisClusterUnderTest, slot: int, source: ClusterNode) -> ClusterNode:
    """Move ``slot`` and its keys from ``source`` to another primary, as resharding does."""
    target = next(
        node
        for node in cluster.live_nodes()
        if node is not source and node.client().info("replication")["role"] == "master"
    )
    with source.client() as src, target.client() as dst:
        source_id, target_id = (c.execute_command("CLUSTER MYID") for c in (src, dst))
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for client in (dst, src):
            client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    return target


@pytest.mark.slow
def test_migrating_the_slot_of_a_live_conversation_loses_nothing(
    cluster: RedisClusterUnderTest, base_url: str
) -> None:
    cid, readers = live_run(base_url, "Plan 3 days in Madrid [[slow]]")
    slot = key_slot(stream_key(cid).encode())
    source = cluster.primary_of_slot(slot)
    target = migrate_slot(cluster, slot, source)
    cluster.wait_until(lambda: cluster.primary_of_slot(slot) is target, "the slot moved")
    finish(readers)
    check_run(cluster, cid, readers)
    next_message_is_accepted(base_url, cid)
