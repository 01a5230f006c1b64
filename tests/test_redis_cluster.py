"""The whole product on a Redis Cluster: 3 primaries with a replica each, and one node owning
every slot (how Azure Managed Redis looks to a client). Real nodes, real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio.cluster as aiocluster

from agentstream.config import Settings
from agentstream.redis_clients import is_cluster
from agentstream.streamlog.keys import (
    SLOT_GROUPS,
    conversation_keys,
    group_tag,
    hash_tag,
    stream_key,
)
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, Api
from .devhost_process import running_devhost
from .redis_cluster import RedisClusterUnderTest, running_cluster
from .redis_connections import ConnectionPeaks
from .standins import scripted_services
from .test_many_readers import (
    HUB_BOUND,
    HUB_NAMES,
    READER_NAMES,
    attached_readers,
    read_lines,
    start_runs,
    write_runs,
)

pytestmark = pytest.mark.slow  # six cluster nodes and the app on them


@pytest.fixture(scope="module", params=["3-shards", "1-node"])
def cluster(request: pytest.FixtureRequest) -> Iterator[RedisClusterUnderTest]:
    primaries, replicas = (3, 1) if request.param == "3-shards" else (1, 0)
    with running_cluster(primaries, replicas) as started:
        yield started


@pytest.fixture(scope="module")
def model() -> Any:
    return create_model_app(delay_seconds=0.001)


@pytest.fixture(scope="module")
def app_env(cluster: RedisClusterUnderTest, model: Any) -> Iterator[dict[str, str]]:
    with scripted_services(model) as services:
        yield {
            **services,
            "REDIS_CONNECTION_STRING": cluster.connection_string,
            "STREAM_KEEPALIVE_SECONDS": "2",
        }


def sync_client(cluster: RedisClusterUnderTest) -> redis.RedisCluster:
    return redis.RedisCluster(host="127.0.0.1", port=cluster.port, decode_responses=True)


def test_auto_detects_the_cluster(cluster: RedisClusterUnderTest) -> None:
    settings = Settings.from_env({"REDIS_CONNECTION_STRING": cluster.connection_string})
    assert is_cluster(settings)
    forced = Settings.from_env(
        {"REDIS_CONNECTION_STRING": cluster.connection_string, "REDIS_CLUSTER": "false"}
    )
    assert not is_cluster(forced)


def test_a_conversation_runs_and_every_key_of_it_shares_its_groups_slot(
    cluster: RedisClusterUnderTest, app_env: dict[str, str]
) -> None:
    with running_devhost(app_env) as url:
        api = Api(url)
        try:
            first = api.start("Plan 2 days in Lisbon")
            assert first.status_code == 202, first.text
            cid = first.json()["conversation_id"]
            events = api.read_run(cid, first.json()["cursor"])
            assert events[-1]["type"] == "run.completed"
            second = api.send(cid, "And one more day?")
            assert second.status_code == 202, second.text
            assert api.read_run(cid, second.json()["cursor"])[-1]["type"] == "run.completed"
            status = api.http.get(f"{AGENT}/conversations/{cid}").json()
            assert [run["status"] for run in status["runs"]] == ["completed", "completed"]
        finally:
            api.http.close()
    store = sync_client(cluster)
    try:
        keys = sorted(store.scan_iter(match=f"*:{cid}", target_nodes=store.PRIMARIES))
        assert keys == sorted(conversation_keys(cid))  # the run records too
        assert {hash_tag(key) for key in keys} == {group_tag(cid)}
        stored = [entry_id for entry_id, _ in store.xrange(stream_key(cid))]
        # The first run's events after its cursor (the run.queued), as stored.
        assert [e["id"] for e in events] == stored[1 : len(events) + 1]
    finally:
        store.close()


# A thousand readers of ten conversations, and a thousand conversations with a reader each (three
# deltas per run there: the bound and the exactness are the same, the writing is 5x shorter).
@pytest.mark.parametrize(("readers", "streams", "deltas"), [(1000, 10, 20), (1000, 1000, 3)])
async def test_many_readers_on_streams_of_every_shard_hold_a_bounded_number_of_connections(
    cluster: RedisClusterUnderTest,
    app_env: dict[str, str],
    readers: int,
    streams: int,
    deltas: int,
) -> None:
    aclient = aiocluster.RedisCluster(host="127.0.0.1", port=cluster.port, decode_responses=True)
    runs = await start_runs(aclient, streams)
    await aclient.aclose()
    groups = {group_tag(cid) for cid, _ in runs}
    writer_client = sync_client(cluster)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    ports = [node.port for node in cluster.live_nodes()]
    names = {"hub": HUB_NAMES, "readers": READER_NAMES}
    with running_devhost(app_env) as url, ConnectionPeaks(ports, names) as seen:
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            reading = await attached_readers(http, runs, readers, 300, wave=100)
            writer = threading.Thread(target=write_runs, args=(writer_client, runs, deltas))
            writer.start()
            async with asyncio.timeout(300):
                results = await asyncio.gather(*reading)
            await asyncio.to_thread(writer.join)
            reference = {cid: await read_lines(http, cid) for cid, _ in runs}
    writer_client.close()

    # Per node, whatever the readers: the hub's subscriber and reads, and the catch-up pool's two.
    assert all(count <= HUB_BOUND for count in seen.peaks["hub"].values()), seen.peaks
    assert all(count <= 2 for count in seen.peaks["readers"].values()), seen.peaks
    assert len(groups) <= SLOT_GROUPS
    for i, lines in enumerate(results):
        expected = reference[runs[i % streams][0]]
        assert len(expected) == 1 + 1 + deltas + 1
        assert lines == expected
        assert [json.loads(line)["seq"] for line in lines] == list(range(len(lines)))
