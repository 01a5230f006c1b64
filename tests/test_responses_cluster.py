"""The Responses surface on a Redis Cluster (3 primaries with a replica each): its own keys
(the response records) live in other slots than the conversation's, and every command on them is
single-key or a non-transactional pipeline, so a cluster serves them as a single Redis does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from . import responses_sdk_scenario as scenario
from .devhost_process import running_devhost
from .redis_cluster import running_cluster
from .standins import scripted_services

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with (
        running_cluster(3, 1) as cluster,
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
