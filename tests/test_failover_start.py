"""``START`` across failovers, on a real 3-shard cluster with a replica each.

- A ``202`` whose ``run.queued`` no replica confirmed, then the primary SIGKILLed and its replica
  promoted without the run: the entity's signal arrives after the failover and writes the run
  again from its input (streamlog/requeue.py), with its id, its ``run.queued`` id and its
  ``Idempotency-Key``. Readers holding the ``202``'s cursor read it whole.
- The first ``START`` after a failover of its shard, on a slot the client has not seen move.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot

from agentstream.streamlog import control
from agentstream.streamlog.keys import meta_key, stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, TERMINAL
from .cursor_reader import CursorReader
from .devhost_process import DevHostProcess, devhost_process
from .model_gate import HELD, ModelGate
from .redis_cluster import ClusterNode, RedisClusterUnderTest, running_cluster
from .redis_server import free_port
from .standins import scripted_services
from .test_failover import replica_of, restart

READERS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterUnderTest]:
    with running_cluster(3, 1) as started:
        yield started


@pytest.fixture(autouse=True)
def whole_cluster(cluster: RedisClusterUnderTest) -> Iterator[None]:
    """A node a failed test left frozen or dead comes back, so the next test starts on a whole
    cluster."""
    yield
    for node in cluster.live_nodes():
        node.thaw()
    for node in cluster.nodes:
        if not node.alive:
            restart(cluster, node)


@pytest.fixture(scope="module")
def gate() -> Iterator[ModelGate]:
    gate = ModelGate(create_model_app(delay_seconds=0.001))
    yield gate
    gate.open()


@pytest.fixture(scope="module")
def devhost(cluster: RedisClusterUnderTest, gate: ModelGate) -> Iterator[DevHostProcess]:
    with scripted_services(gate) as services:
        env = {
            **services,
            "REDIS_CONNECTION_STRING": cluster.connection_string,
            "STREAM_KEEPALIVE_SECONDS": "1",
            # One thread for entity batches: a held run keeps the next signal waiting.
            "PYTHON_THREADPOOL_THREAD_COUNT": "1",
        }
        with devhost_process(env, free_port()) as process:
            yield process


def read_whole(base_url: str, cid: str, cursor: str) -> list[dict[str, object]]:
    reader = CursorReader([base_url], cid, cursor)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive() and reader.events[-1]["type"] in TERMINAL
    return reader.events


def app_log(devhost: DevHostProcess) -> str:
    """The development host's log without its one line per request."""
    lines = devhost.log_text().splitlines()
    return "\n".join(line for line in lines if "agentstream.requests" not in line)[-4000:]


def primary_and_replica(
    cluster: RedisClusterUnderTest, cid: str
) -> tuple[ClusterNode, ClusterNode]:
    primary = cluster.primary_of_slot(key_slot(stream_key(cid).encode()))
    return primary, replica_of(cluster, primary)


def finished_conversation(http: httpx.Client) -> str:
    """A conversation whose first run completed (and was replicated: the test asks WAIT)."""
    first = http.post(f"{AGENT}/conversations", json={"message": "Hello"})
    assert first.status_code == 202, first.text
    cid = first.json()["conversation_id"]
    read_whole(str(http.base_url), cid, first.json()["cursor"])
    return cid


def post_unreplicated(
    cluster: RedisClusterUnderTest, http: httpx.Client, cid: str, message: str, **headers: str
) -> tuple[ClusterNode, ClusterNode, str, str]:
    """Freeze the replica and cut its link, then POST: the 202's START is on the primary only.
    Returns the primary, its replica, and the 202's run id and cursor."""
    primary, replica = primary_and_replica(cluster, cid)
    with primary.client() as client:
        assert client.execute_command("WAIT", 1, 5000) == 1  # all before is replicated
        replica.freeze()
        client.client_kill_filter(_type="replica")
        posted = http.post(
            f"{AGENT}/conversations/{cid}/messages", json={"message": message}, headers=headers
        )
        assert posted.status_code == 202, posted.text
        run_id, cursor = posted.json()["run_id"], posted.json()["cursor"]
        assert client.xrange(stream_key(cid), min=cursor, max=cursor)
    return primary, replica, run_id, cursor


def fail_over_losing_the_run(
    cluster: RedisClusterUnderTest, primary: ClusterNode, replica: ClusterNode, cid: str, run: str
) -> None:
    """SIGKILL the primary, let the thawed replica take over, and check it never had the run."""
    primary.kill()
    replica.thaw()
    cluster.wait_until(
        lambda: cluster.primary_of_slot(key_slot(stream_key(cid).encode())) is replica,
        "the replica took over",
    )
    with replica.client() as promoted:
        assert promoted.hget(meta_key(cid), f"status:{run}") is None


def check_recreated(
    devhost: DevHostProcess,
    replica: ClusterNode,
    cid: str,
    run_id: str,
    cursor: str,
    readers: list[CursorReader],
) -> None:
    """The run is in the stream where the 202 said, whole, and every reader read it gapless."""
    for reader in readers:
        reader.join(timeout=120)
        assert reader.events and reader.events[-1]["type"] in TERMINAL, (
            reader.statuses,
            app_log(devhost),
        )
    store = redis.RedisCluster(host="127.0.0.1", port=replica.port, decode_responses=True)
    try:
        stored = [{"id": i, **f} for i, f in store.xrange(stream_key(cid), min=cursor)]
    finally:
        store.close()
    # run.queued at the cursor with seq 0, then the run's events, all of the same run.
    assert stored[0]["id"] == cursor
    assert (stored[0]["type"], stored[0]["run"], stored[0]["seq"]) == ("run.queued", run_id, "0")
    assert [e["run"] for e in stored] == [run_id] * len(stored)
    assert [int(e["seq"]) for e in stored] == list(range(len(stored)))
    assert stored[-1]["type"] == "run.completed"
    for reader in readers:
        assert all(status == 200 for status in reader.statuses), reader.statuses
        assert [e["id"] for e in reader.events] == [e["id"] for e in stored[1:]]
        assert [e["seq"] for e in reader.events] == list(range(1, len(stored)))


def started_readers(base_url: str, cid: str, cursor: str) -> list[CursorReader]:
    readers = [CursorReader([base_url], cid, cursor) for _ in range(READERS)]
    for reader in readers:
        reader.start()
    return readers


@pytest.mark.slow
def test_a_202_no_replica_confirmed_runs_with_its_id_after_the_primary_died(
    cluster: RedisClusterUnderTest, devhost: DevHostProcess, gate: ModelGate
) -> None:
    http = httpx.Client(base_url=devhost.base_url, timeout=30)
    gate.close()
    try:
        cid = finished_conversation(http)
        # Another conversation's run holds the entity thread, so this conversation's next
        # signal waits until the failover is over.
        blocker = http.post(f"{AGENT}/conversations", json={"message": f"Wait {HELD}"})
        assert blocker.status_code == 202, blocker.text
        assert gate.wait_held(1) == 1
        key = {"Idempotency-Key": "porto-1"}
        primary, replica, run_id, cursor = post_unreplicated(
            cluster, http, cid, "Plan 2 days in Porto", **key
        )
        readers = started_readers(devhost.base_url, cid, cursor)
        fail_over_losing_the_run(cluster, primary, replica, cid, run_id)
    finally:
        gate.open()
    check_recreated(devhost, replica, cid, run_id, cursor, readers)
    restart(cluster, primary)
    # The Idempotency-Key came back with the run: a retry names the same run.
    again = http.post(
        f"{AGENT}/conversations/{cid}/messages",
        json={"message": "Plan 2 days in Porto"},
        headers=key,
    )
    assert again.status_code == 202 and again.json()["run_id"] == run_id, again.text
    following = http.post(f"{AGENT}/conversations/{cid}/messages", json={"message": "thanks"})
    assert following.status_code == 202, following.text
    read_whole(devhost.base_url, cid, following.json()["cursor"])
    http.close()


@pytest.mark.slow
def test_a_run_that_began_before_its_unconfirmed_start_was_lost_goes_on(
    cluster: RedisClusterUnderTest, devhost: DevHostProcess, gate: ModelGate
) -> None:
    """The same lost START, but the entity began the run on the old primary first: its writer
    finds the run itself gone at its next write and writes it again, its writes after it."""
    http = httpx.Client(base_url=devhost.base_url, timeout=30)
    gate.close()
    try:
        cid = finished_conversation(http)
        primary, replica, run_id, cursor = post_unreplicated(
            cluster, http, cid, f"Plan 2 days in Faro {HELD}"
        )
        assert gate.wait_held(1) == 1  # run.started is written, on the old primary only
        readers = started_readers(devhost.base_url, cid, cursor)
        fail_over_losing_the_run(cluster, primary, replica, cid, run_id)
    finally:
        gate.open()
    check_recreated(devhost, replica, cid, run_id, cursor, readers)
    restart(cluster, primary)
    following = http.post(f"{AGENT}/conversations/{cid}/messages", json={"message": "thanks"})
    assert following.status_code == 202, following.text
    http.close()


def test_the_first_start_after_a_failover_of_its_shard_is_accepted(
    cluster: RedisClusterUnderTest,
) -> None:
    """The client learned the failover for one slot only; a START on another slot of the same
    shard goes to the old primary first (MOVED) and must still be accepted, not 503."""

    async def scenario() -> None:
        client = AsyncRedisCluster(host="127.0.0.1", port=cluster.port, decode_responses=True)
        limits = control.Limits(ttl_seconds=60, maxlen=1000, min_replicas=1)

        async def start(cid: str) -> str:
            started = await control.start_run(
                client,
                cid,
                uuid.uuid4().hex,
                "hi",
                idempotency_key=None,
                must_exist=False,
                limits=limits,
            )
            return started.outcome

        try:
            cid = uuid.uuid4().hex
            assert await start(cid) == "started"
            _, replica = primary_and_replica(cluster, cid)
            with replica.client() as node:
                node.execute_command("CLUSTER FAILOVER")
            slot = key_slot(stream_key(cid).encode())
            cluster.wait_until(lambda: cluster.primary_of_slot(slot) is replica, "took over")
            cluster.wait_until(cluster.healthy, "cluster_state:ok everywhere")
            other = next(
                c
                for c in (uuid.uuid4().hex for _ in range(1000))
                if key_slot(stream_key(c).encode()) != slot
                and cluster.primary_of_slot(key_slot(stream_key(c).encode())) is replica
            )
            assert await start(other) == "started"
        finally:
            await client.aclose()

    asyncio.run(scenario())
