"""The weather and events stand-ins as the tests use them: a fixed today and a required key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from starlette.applications import Starlette

from agentstream_dev.tool_standins import create_app, tool_settings

from .servers import serve_in_thread

TODAY = date(2025, 6, 1)
EVENTS_KEY = "tm-key"


def external_apis(*, weather_status: int = 200) -> Starlette:
    return create_app(
        today=lambda: TODAY, required_events_key=EVENTS_KEY, weather_status=weather_status
    )


def tool_env(base_url: str, *, events_key: str | None = EVENTS_KEY) -> dict[str, str]:
    return tool_settings(base_url, events_key)


@contextmanager
def scripted_services(model: Any, redis_port: int | None = None) -> Iterator[dict[str, str]]:
    """Serve ``model`` (a scripted model app) and the tool stand-ins on free ports; yield the
    app's settings that point at them (and at the test's Redis, when given)."""
    with serve_in_thread(model) as model_url, serve_in_thread(external_apis()) as apis_url:
        settings = {
            "OPENAI_BASE_URL": f"{model_url}/v1",
            "OPENAI_MODEL": "scripted",
            **tool_env(apis_url),
        }
        if redis_port is not None:
            settings["REDIS_CONNECTION_STRING"] = f"127.0.0.1:{redis_port}"
        yield settings
