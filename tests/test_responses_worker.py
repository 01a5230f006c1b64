"""The Responses surface under the real Python worker library (``azure-functions-runtime``),
through the worker harness, with the real ``openai`` package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from . import responses_sdk_scenario as scenario
from .standins import scripted_services
from .worker_host.harness import PYTHON_313, running_worker, worker_log

pytestmark = pytest.mark.skipif(
    not PYTHON_313.exists(),
    reason="needs .venv313 (Python 3.13 with azure-functions-runtime and grpcio); `make test` "
    "creates it when pyenv or the system provides python3.13",
)


@pytest.fixture(scope="module")
def base_url(redis_port: int) -> Iterator[str]:
    model = create_model_app(delay_seconds=0.002)
    with (
        scripted_services(model, redis_port) as env,
        worker_log() as log,
        running_worker({**env, "STREAM_KEEPALIVE_SECONDS": "1"}, log) as harness,
    ):
        yield harness.base_url


def test_the_sdk_resumes_polls_continues_and_cancels_under_the_real_worker(base_url: str) -> None:
    scenario.essentials(base_url, cuts=30, seed=18)
