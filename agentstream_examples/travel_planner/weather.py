"""``get_weather_forecast``: Open-Meteo geocoding, then the daily forecast (no key needed)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agentstream.tools import ToolError

from .services import get_json, tool_settings

MAX_DAYS = 16  # Open-Meteo's forecast horizon

# WMO weather interpretation codes, as Open-Meteo documents them.
_WEATHER_CODES = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "rime fog",
    51: "light drizzle",
    53: "drizzle",
    55: "dense drizzle",
    56: "freezing drizzle",
    57: "freezing drizzle",
    61: "light rain",
    63: "rain",
    65: "heavy rain",
    66: "freezing rain",
    67: "freezing rain",
    71: "light snow",
    73: "snow",
    75: "heavy snow",
    77: "snow grains",
    80: "light showers",
    81: "showers",
    82: "violent showers",
    85: "snow showers",
    86: "heavy snow showers",
    95: "thunderstorm",
    96: "thunderstorm with hail",
    99: "thunderstorm with heavy hail",
}


def get_weather_forecast(
    location: Annotated[str, Field(description="City or place name, e.g. 'Lisbon'", min_length=1)],
    days: Annotated[int, Field(description="Number of days from today", ge=1, le=MAX_DAYS)] = 3,
) -> dict[str, Any]:
    """Daily weather forecast (conditions, temperatures in °C, chance of rain) for a place,
    starting today."""
    settings = tool_settings()
    place = _geocode(settings.geocoding_url, location.strip()[:200])
    forecast = get_json(
        settings.forecast_url,
        {
            "latitude": place["latitude"],
            "longitude": place["longitude"],
            "daily": "weather_code,temperature_2m_max,temperature_2m_min,"
            "precipitation_probability_max",
            "timezone": "auto",
            "forecast_days": days,
        },
        "weather service",
    )
    return {"location": _place_name(place), "days": _daily(forecast)}


def _geocode(url: str, location: str) -> dict[str, Any]:
    found = get_json(
        url,
        {"name": location, "count": 1, "language": "en", "format": "json"},
        "geocoding service",
    )
    results = found.get("results") if isinstance(found, dict) else None
    if not results:
        raise ToolError(f"no place called {location!r} was found")
    place = results[0]
    if "latitude" not in place or "longitude" not in place:
        raise ToolError("the geocoding service sent a place without coordinates")
    return place


def _place_name(place: dict[str, Any]) -> str:
    parts = [place.get("name"), place.get("admin1"), place.get("country")]
    return ", ".join(dict.fromkeys(str(p) for p in parts if p))


def _daily(forecast: Any) -> list[dict[str, Any]]:
    daily = forecast.get("daily") if isinstance(forecast, dict) else None
    if not isinstance(daily, dict) or not daily.get("time"):
        raise ToolError("the weather service sent no daily forecast")

    def column(name: str) -> list[Any]:
        values = daily.get(name) or []
        return values + [None] * (len(daily["time"]) - len(values))

    return [
        {
            "date": day,
            "conditions": _WEATHER_CODES.get(code, "unknown") if code is not None else "unknown",
            "max_c": high,
            "min_c": low,
            "precipitation_chance": rain,
        }
        for day, code, high, low, rain in zip(
            daily["time"],
            column("weather_code"),
            column("temperature_2m_max"),
            column("temperature_2m_min"),
            column("precipitation_probability_max"),
            strict=True,
        )
    ]
