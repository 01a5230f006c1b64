"""``get_local_events``: the Ticketmaster Discovery API (offered only when a key is set)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import Field

from agentstream.tools import ToolError

from .services import get_json, tool_settings

MAX_EVENTS = 10


def events_key_configured() -> bool:
    """The tool's secret is an app setting (``TICKETMASTER_API_KEY``), never an argument."""
    return tool_settings().ticketmaster_api_key is not None


def get_local_events(
    location: Annotated[str, Field(description="City name, e.g. 'Lisbon'", min_length=1)],
    start: Annotated[date, "First day, YYYY-MM-DD"],
    end: Annotated[date, "Last day, YYYY-MM-DD"],
) -> dict[str, Any]:
    """Concerts, sports and other ticketed events in a city between two dates."""
    if end < start:
        raise ToolError("'end' must not be before 'start'")
    settings = tool_settings()
    location = location.strip()[:200]
    found = get_json(
        settings.ticketmaster_url,
        {
            "apikey": settings.ticketmaster_api_key,
            "city": location,
            "startDateTime": f"{start.isoformat()}T00:00:00Z",
            "endDateTime": f"{end.isoformat()}T23:59:59Z",
            "size": MAX_EVENTS,
            "sort": "date,asc",
        },
        "events service",
    )
    events = (found.get("_embedded") or {}).get("events") or []
    return {"location": location, "events": [_summary(event) for event in events]}


def _summary(event: dict[str, Any]) -> dict[str, Any]:
    start = (event.get("dates") or {}).get("start") or {}
    venues = (event.get("_embedded") or {}).get("venues") or [{}]
    return {
        "name": event.get("name"),
        "date": start.get("localDate"),
        "time": start.get("localTime"),
        "venue": venues[0].get("name"),
        "url": event.get("url"),
    }
