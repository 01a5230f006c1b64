"""The Responses surface on a Redis Cluster (3 primaries with a replica each): its own keys
(the response records) live in other slots than the conversation's, and every command on them is
single-key or a non-transactional pipeline, so a cluster serves them as a single Redis does. The
streams expire by the real setting (a minute, the shortest): the run records, in each
conversation's slot, outlive them."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import redis

from agentstream.streamlog.keys import run_records_key, stream_key
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
                "REDIS_STREAM_TTL_MINUTES": "1",
            }
        ) as url,
    ):
        yield url


def test_the_sdk_scenario_on_a_redis_cluster(base_url: str) -> None:
    scenario.essentials(base_url, cuts=30, seed=16)


def test_responses_outlive_their_streams_by_the_ttl_setting_on_a_redis_cluster(
    base_url: str, cluster: RedisClusterUnderTest
) -> None:
    client, _ = scenario.sync_client(base_url)
    completed = client.responses.create(
        model="travelplanner", input="Plan 1 day in Lisbon", background=True
    )
    failed = client.responses.create(
        model="travelplanner", input="Trains? [[fail-always:500]]", background=True
    )
    running = client.responses.create(
        model="travelplanner", input="Plan 7 days in Rome [[slow]]", background=True
    )
    cancelled = client.responses.cancel(running.id)
    before = {
        response.id: list(client.responses.retrieve(response.id, stream=True))[-1].response
        for response in (completed, failed, cancelled)
    }
    assert [r.status for r in before.values()] == ["completed", "failed", "cancelled"]
    cids = [r.model_dump()["conversation"]["id"].removeprefix("conv_") for r in before.values()]
    with redis.RedisCluster(host="127.0.0.1", port=cluster.port) as store:
        # REDIS_STREAM_TTL_MINUTES=1: the streams expire a minute after their last event.
        cluster.wait_until(
            lambda: not any(store.exists(stream_key(cid)) for cid in cids),
            "the streams expired",
            timeout=150,
        )
        assert all(store.exists(run_records_key(cid)) for cid in cids)
    for response_id, response in before.items():
        assert client.responses.retrieve(response_id).model_dump() == response.model_dump()
        assert client.responses.cancel(response_id).model_dump() == response.model_dump()
        with pytest.raises(openai.BadRequestError) as streaming:
            list(client.responses.retrieve(response_id, stream=True))
        assert streaming.value.code == "response_stream_expired"
