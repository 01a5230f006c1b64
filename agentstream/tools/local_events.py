"""``get_local_events``: the Ticketmaster Discovery API (offered only when a key is set)."""

from __future__ import annotations

from typing import Any

import httpx

from ..config import ToolSettings
from .arguments import date_argument, text_argument
from .base import Tool, ToolError, get_json

MAX_EVENTS = 10

_PARAMETERS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City name, e.g. 'Lisbon'"},
        "start": {"type": "string", "description": "First day, YYYY-MM-DD"},
        "end": {"type": "string", "description": "Last day, YYYY-MM-DD"},
    },
    "required": ["location", "start", "end"],
    "additionalProperties": False,
}


def local_events_tool(settings: ToolSettings, http: httpx.Client) -> Tool:
    def run(arguments: dict[str, Any]) -> dict[str, Any]:
        location = text_argument(arguments, "location")
        start = date_argument(arguments, "start")
        end = date_argument(arguments, "end")
        if end < start:
            raise ToolError("'end' must not be before 'start'")
        found = get_json(
            http,
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

    return Tool(
        name="get_local_events",
        description="Concerts, sports and other ticketed events in a city between two dates.",
        parameters=_PARAMETERS,
        run=run,
    )


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
