"""``/api/health`` reports whether the model answers, without secrets and without turning 503."""

from __future__ import annotations

import httpx
import pytest

from agentstream.config import Settings
from agentstream.model_probe import CACHE_SECONDS, model_status
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .devhost_process import running_devhost
from .redis_server import free_port
from .servers import serve_in_thread

SECRET_KEY = "sk-health-test-secret-0123456789"


def _health(env: dict[str, str]) -> httpx.Response:
    with running_devhost(env) as url:
        return httpx.get(f"{url}/api/health", timeout=30)


@pytest.mark.slow  # an app process of its own
def test_health_says_a_reachable_model_is_ok(redis_port: int) -> None:
    with serve_in_thread(create_model_app()) as model_url:
        response = _health(
            {
                "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
                "OPENAI_BASE_URL": f"{model_url}/v1",
                "OPENAI_MODEL": "scripted",
                "OPENAI_API_KEY": SECRET_KEY,
            }
        )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["redis"], body["model"]) == ("ok", "ok", "ok")


@pytest.mark.slow  # an app process of its own, and the probe's timeout
def test_an_unreachable_model_is_reported_without_secrets_and_without_a_503(
    redis_port: int,
) -> None:
    model_port = free_port()  # nothing listens there
    response = _health(
        {
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1?api-key={SECRET_KEY}",
            "OPENAI_MODEL": "scripted",
            "OPENAI_API_KEY": SECRET_KEY,
        }
    )
    assert response.status_code == 200, "the app itself is healthy"
    body = response.json()
    assert body["status"] == "ok"
    assert body["model"] == "unreachable (ConnectError)"
    assert SECRET_KEY not in response.text
    assert str(model_port) not in response.text and "http" not in response.text


async def test_the_probe_is_cached_briefly() -> None:
    now = [1000.0]
    with serve_in_thread(create_model_app()) as model_url:
        model = Settings.from_env(
            {"OPENAI_BASE_URL": f"{model_url}/v1", "OPENAI_MODEL": "scripted"}
        ).model
        assert await model_status(model, clock=lambda: now[0]) == "ok"
    # The model is gone now; within the cache period the last answer stands ...
    now[0] += CACHE_SECONDS - 1
    assert await model_status(model, clock=lambda: now[0]) == "ok"
    # ... and after it the probe runs again.
    now[0] += 2
    assert await model_status(model, clock=lambda: now[0]) == "unreachable (ConnectError)"


async def test_no_model_configured() -> None:
    assert await model_status(None) == "not configured"
