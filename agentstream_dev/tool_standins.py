"""Local stand-ins for the travel planner's two external services, with deterministic data.

They answer in the shape of the real APIs the tools call: Open-Meteo's geocoding search
(``/v1/search``) and daily forecast (``/v1/forecast``), and Ticketmaster's Discovery API
(``/discovery/v2/events.json``). ``make run`` serves them when no model is configured, so the
offline demo's tool calls work; the tests use the same app. The data is made up: the same
question always gets the same answer (forecasts start on the stand-in's ``today``).

Run it alone: ``python -m agentstream_dev.tool_standins --port 8090``.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import deque
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# A key the launcher hands the app so that the events tool is offered; any key is accepted
# unless the app is created with ``required_events_key``.
DEMO_EVENTS_KEY = "offline-demo"
UNKNOWN_PLACE = "atlantis"  # geocoding finds nothing for it, like the real service for nonsense

# name -> (country, admin1, latitude, longitude, typical daily high in °C)
PLACES: dict[str, tuple[str, str, float, float, int]] = {
    "amsterdam": ("Netherlands", "North Holland", 52.37, 4.89, 17),
    "barcelona": ("Spain", "Catalonia", 41.39, 2.16, 23),
    "berlin": ("Germany", "Land Berlin", 52.52, 13.41, 18),
    "kyoto": ("Japan", "Kyoto", 35.02, 135.75, 22),
    "lisbon": ("Portugal", "Lisbon", 38.72, -9.14, 25),
    "london": ("United Kingdom", "England", 51.51, -0.13, 17),
    "new york": ("United States", "New York", 40.71, -74.01, 20),
    "paris": ("France", "Île-de-France", 48.85, 2.35, 19),
    "prague": ("Czechia", "Prague", 50.09, 14.42, 17),
    "rome": ("Italy", "Lazio", 41.89, 12.51, 24),
    "tokyo": ("Japan", "Tokyo", 35.69, 139.69, 22),
    "vienna": ("Austria", "Vienna", 48.21, 16.37, 18),
}
# WMO weather codes, the way Open-Meteo reports them: a week of mixed weather.
WEEK_OF_WEATHER = (0, 61, 2, 3, 80, 1, 0)
EVENT_NAMES = (
    "Jazz by the River",
    "Night Food Market",
    "Chamber Orchestra Evening",
    "Open-Air Cinema",
    "Street Dance Festival",
    "Indie Rock Showcase",
    "Comedy Night",
)
VENUES = ("Riverside Stage", "Old Market Hall", "City Concert Hall", "Harbour Park")


def _stable_number(text: str) -> int:
    """A number that depends only on ``text`` (``hash()`` changes between processes)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def create_app(
    *,
    today: Callable[[], date] = date.today,
    required_events_key: str | None = None,
    weather_status: int = 200,
) -> Starlette:
    """The stand-in services. ``app.state.seen`` holds the queries of the latest requests.

    ``required_events_key``: answer ``401`` to any other Ticketmaster key (the real API does);
    ``weather_status``: make the forecast endpoint fail with this status.
    """
    seen: deque[dict[str, str]] = deque(maxlen=100)

    async def search(request: Request) -> JSONResponse:
        seen.append(dict(request.query_params))
        name = request.query_params.get("name", "").strip()
        if not name or name.lower() == UNKNOWN_PLACE:
            return JSONResponse({"generationtime_ms": 0.1})
        return JSONResponse({"results": [_place(name)], "generationtime_ms": 0.1})

    async def forecast(request: Request) -> JSONResponse:
        seen.append(dict(request.query_params))
        if weather_status != 200:
            return JSONResponse({"error": True, "reason": "stand-in failure"}, weather_status)
        try:
            latitude = float(request.query_params["latitude"])
            longitude = float(request.query_params["longitude"])
            days = max(1, min(16, int(request.query_params.get("forecast_days", "7"))))
        except (KeyError, ValueError):
            return JSONResponse({"error": True, "reason": "bad coordinates or days"}, 400)
        return JSONResponse(_forecast(latitude, longitude, days, today()))

    async def events(request: Request) -> JSONResponse:
        seen.append(dict(request.query_params))
        key = request.query_params.get("apikey")
        if not key or (required_events_key is not None and key != required_events_key):
            return JSONResponse({"fault": {"faultstring": "Invalid ApiKey"}}, 401)
        try:
            start = date.fromisoformat(request.query_params["startDateTime"][:10])
            end = date.fromisoformat(request.query_params["endDateTime"][:10])
        except (KeyError, ValueError):
            return JSONResponse({"errors": [{"detail": "bad startDateTime or endDateTime"}]}, 400)
        city = request.query_params.get("city", "").strip()
        return JSONResponse(_events(city, start, end))

    app = Starlette(
        routes=[
            Route("/v1/search", search),
            Route("/v1/forecast", forecast),
            Route("/discovery/v2/events.json", events),
        ]
    )
    app.state.seen = seen
    return app


def _place(name: str) -> dict[str, Any]:
    known = PLACES.get(name.lower())
    if known is None:
        number = _stable_number(name.lower())
        return {
            "name": name,
            "latitude": round((number % 12000) / 100 - 60, 2),
            "longitude": round((number // 12000 % 36000) / 100 - 180, 2),
        }
    country, admin1, latitude, longitude, _ = known
    return {
        "name": name.title(),
        "latitude": latitude,
        "longitude": longitude,
        "country": country,
        "admin1": admin1,
    }


def _forecast(latitude: float, longitude: float, days: int, first: date) -> dict[str, Any]:
    high = next(
        (p[4] for p in PLACES.values() if (p[2], p[3]) == (latitude, longitude)),
        round(28 - abs(latitude) / 4),
    )
    offset = _stable_number(f"{latitude:.2f},{longitude:.2f}") % len(WEEK_OF_WEATHER)
    codes = [WEEK_OF_WEATHER[(offset + i) % len(WEEK_OF_WEATHER)] for i in range(days)]
    highs = [float(high + (i % 3)) for i in range(days)]
    return {
        "latitude": latitude,
        "longitude": longitude,
        "daily": {
            "time": [(first + timedelta(days=i)).isoformat() for i in range(days)],
            "weather_code": codes,
            "temperature_2m_max": highs,
            "temperature_2m_min": [h - 10 for h in highs],
            "precipitation_probability_max": [80 if c >= 51 else 10 for c in codes],
        },
    }


def _events(city: str, start: date, end: date) -> dict[str, Any]:
    """One event every other day of the range, named and placed deterministically."""
    days = min((end - start).days + 1, 31)
    if days < 1:
        return {"page": {"totalElements": 0}}
    offset = _stable_number(city.lower())
    found = []
    for index in range(0, days, 2):
        name = EVENT_NAMES[(offset + index // 2) % len(EVENT_NAMES)]
        venue = VENUES[(offset + index // 2) % len(VENUES)]
        slug = name.lower().replace(" ", "-")
        found.append(
            {
                "name": name,
                "url": f"https://events.example/{slug}",
                "dates": {
                    "start": {
                        "localDate": (start + timedelta(days=index)).isoformat(),
                        "localTime": "20:00:00",
                    }
                },
                "_embedded": {"venues": [{"name": venue}]},
            }
        )
    return {"_embedded": {"events": found}, "page": {"totalElements": len(found)}}


def tool_settings(base_url: str, events_key: str | None = DEMO_EVENTS_KEY) -> dict[str, str]:
    """The app settings that point the tools at stand-ins served at ``base_url``."""
    settings = {
        "OPEN_METEO_GEOCODING_URL": f"{base_url}/v1/search",
        "OPEN_METEO_FORECAST_URL": f"{base_url}/v1/forecast",
        "TICKETMASTER_URL": f"{base_url}/discovery/v2/events.json",
    }
    if events_key:
        settings["TICKETMASTER_API_KEY"] = events_key
    return settings


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    print(
        f"Weather and events stand-ins (made-up data) on http://{args.host}:{args.port}",
        flush=True,
    )
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
