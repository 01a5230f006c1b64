"""The weather and events stand-ins as the tests use them: a fixed today and a required key."""

from __future__ import annotations

from datetime import date

from starlette.applications import Starlette

from agentstream.tool_standins import create_app, tool_settings

TODAY = date(2025, 6, 1)
EVENTS_KEY = "tm-key"


def external_apis(*, weather_status: int = 200) -> Starlette:
    return create_app(
        today=lambda: TODAY, required_events_key=EVENTS_KEY, weather_status=weather_status
    )


def tool_env(base_url: str, *, events_key: str | None = EVENTS_KEY) -> dict[str, str]:
    return tool_settings(base_url, events_key)
