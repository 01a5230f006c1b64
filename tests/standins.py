"""Local stand-ins for Open-Meteo and the Ticketmaster Discovery API (the only external APIs)."""

from __future__ import annotations

from datetime import date, timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TODAY = date(2025, 6, 1)
WEATHER_CODES = [0, 61, 2, 3, 80, 1, 0]


def external_apis(*, weather_status: int = 200) -> Starlette:
    """Deterministic answers in the shape of the real services."""
    seen: list[dict[str, str]] = []

    async def search(request: Request) -> JSONResponse:
        seen.append(dict(request.query_params))
        name = request.query_params.get("name", "")
        if name.lower() == "atlantis":
            return JSONResponse({"generationtime_ms": 0.1})
        return JSONResponse(
            {
                "results": [
                    {
                        "name": name,
                        "latitude": 38.72,
                        "longitude": -9.14,
                        "country": "Portugal",
                        "admin1": "Lisbon",
                    }
                ]
            }
        )

    async def forecast(request: Request) -> JSONResponse:
        seen.append(dict(request.query_params))
        if weather_status != 200:
            return JSONResponse({"error": True, "reason": "down"}, status_code=weather_status)
        days = int(request.query_params.get("forecast_days", "3"))
        return JSONResponse(
            {
                "daily": {
                    "time": [(TODAY + timedelta(days=i)).isoformat() for i in range(days)],
                    "weather_code": WEATHER_CODES[:days],
                    "temperature_2m_max": [25.0 + i for i in range(days)],
                    "temperature_2m_min": [15.0 + i for i in range(days)],
                    "precipitation_probability_max": [10 * i for i in range(days)],
                }
            }
        )

    async def events(request: Request) -> JSONResponse:
        seen.append(dict(request.query_params))
        if request.query_params.get("apikey") != "tm-key":
            return JSONResponse({"fault": "invalid key"}, status_code=401)
        return JSONResponse(
            {
                "_embedded": {
                    "events": [
                        {
                            "name": "Fado Night",
                            "url": "https://example.invalid/fado",
                            "dates": {
                                "start": {"localDate": TODAY.isoformat(), "localTime": "21:00:00"}
                            },
                            "_embedded": {"venues": [{"name": "Clube de Fado"}]},
                        }
                    ]
                }
            }
        )

    app = Starlette(
        routes=[
            Route("/v1/search", search),
            Route("/v1/forecast", forecast),
            Route("/discovery/v2/events.json", events),
        ]
    )
    app.state.seen = seen
    return app


def tool_env(base_url: str, *, events_key: str | None = "tm-key") -> dict[str, str]:
    env = {
        "OPEN_METEO_GEOCODING_URL": f"{base_url}/v1/search",
        "OPEN_METEO_FORECAST_URL": f"{base_url}/v1/forecast",
        "TICKETMASTER_URL": f"{base_url}/discovery/v2/events.json",
    }
    if events_key:
        env["TICKETMASTER_API_KEY"] = events_key
    return env
