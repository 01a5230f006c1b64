"""The Responses surface on a Redis Cluster (3 primaries with a replica each): its own keys
(the response records) live in other slots than the conversation's, and every command on them is
single-key or a non-transactional pipeline, so a cluster serves them as a single Redis does."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import redis

from agentstream.streamlog.keys import meta_key, run_records_key, stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from . import responses_sdk_scenario as scenario
from .devhost_process import running_devhost
from .redis_cluster import RedisClusterUnderTest, running_cluster
from .standins import scripted_services

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterUnderTest]:
    with running_cluster(3, 1) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(cluster: RedisClusterUnderTest) -> Iterator[str]:
    with (
        scripted_services(create_model_app(delay_seconds=0.002)) as services,
        running_devhost(
            {
                **services,
                "REDIS_CONNECTION_STRING": cluster.connection_string,
                "STREAM_KEEPALIVE_SECONDS": "1",
            }
        ) as url,
    ):
        yield url


def test_the_sdk_scenario_on_a_redis_cluster(base_url: str) -> None:
    scenario.essentials(base_url, cuts=30, seed=16)


def test_a_response_outlives_its_stream_on_a_redis_cluster(
    base_url: str, cluster: RedisClusterUnderTest
) -> None:
    client, _ = scenario.sync_client(base_url)
    created = client.responses.create(
        model="travelplanner", input="Plan 1 day in Lisbon", background=True
    )
    streamed = list(client.responses.retrieve(created.id, stream=True))
    assert streamed[-1].type == "response.completed"
    cid = created.model_dump()["conversation"]["id"].removeprefix("conv_")
    with redis.RedisCluster(host="127.0.0.1", port=cluster.port) as store:
        store.pexpire(stream_key(cid), 1)  # the stream expires by TTL, on the node's clock
        store.pexpire(meta_key(cid), 1)
        while store.exists(stream_key(cid)):
            pass
        assert store.exists(run_records_key(cid))
    retrieved = client.responses.retrieve(created.id)
    assert retrieved.model_dump() == streamed[-1].response.model_dump()
    with pytest.raises(openai.BadRequestError) as streaming:
        list(client.responses.retrieve(created.id, stream=True))
    assert streaming.value.code == "response_stream_expired"
