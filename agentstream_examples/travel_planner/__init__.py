"""The travel planner: an agent of this project's own kind, declared as an app's agent would be.

Its tools are plain functions; their schemas come from the signatures. The events tool is offered
only when its key (``TICKETMASTER_API_KEY``, an app setting) is configured.
"""

from __future__ import annotations

from datetime import date

from agentstream.agents import Agent
from agentstream.tools import tool

from .local_events import events_key_configured, get_local_events
from .weather import get_weather_forecast

PROMPT = """You are a friendly travel planner. Today is {today}.
When the user names a destination, check the weather forecast{events_hint} with your tools before
planning. Then write a short day-by-day plan (Day 1, Day 2, ...) that fits the forecast. Keep
earlier turns of the conversation in mind. Never invent weather or events: say when a tool
returned an error."""


def today() -> date:
    return date.today()


def instructions(conversation: list[dict]) -> str:
    events_hint = " and local events" if events_key_configured() else ""
    return PROMPT.format(today=today().isoformat(), events_hint=events_hint)


travel_planner = Agent(
    name="travelplanner",
    description="Plans trips day by day around the weather forecast and local events.",
    instructions=instructions,
    tools=[get_weather_forecast, tool(get_local_events, is_enabled=events_key_configured)],
)
