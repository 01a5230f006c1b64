"""What the scripted model answers: a pure function of the request (plus failure markers)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

# Markers a test puts in the user message to make the server misbehave on purpose.
MARKERS = (
    "fail-once:429",
    "fail-once:500",
    "fail-always:500",
    "fail-always:401",
    "error-midstream",
    "drop-midstream",
    "stall",
    "content-filter",
    "tool-loop",
    "slow",
    "echo",
    "bad-arguments",
    "handoff",
)
_MARKER = re.compile(r"\[\[([a-z:\-0-9]+)\]\]")

KNOWN_PLACES = (
    "Amsterdam",
    "Athens",
    "Bangkok",
    "Barcelona",
    "Berlin",
    "Boston",
    "Buenos Aires",
    "Cairo",
    "Cape Town",
    "Chicago",
    "Copenhagen",
    "Dublin",
    "Edinburgh",
    "Florence",
    "Hong Kong",
    "Istanbul",
    "Kyoto",
    "Lisbon",
    "London",
    "Los Angeles",
    "Madrid",
    "Marrakesh",
    "Melbourne",
    "Mexico City",
    "Milan",
    "Montreal",
    "Munich",
    "New York",
    "Oslo",
    "Paris",
    "Prague",
    "Reykjavik",
    "Rome",
    "San Francisco",
    "Seattle",
    "Seoul",
    "Singapore",
    "Stockholm",
    "Sydney",
    "Tokyo",
    "Toronto",
    "Vancouver",
    "Venice",
    "Vienna",
    "Zurich",
)
_PLACE_AFTER = re.compile(
    r"\b(?:to|in|visit|visiting|around|for|at)\s+([A-Z][\w'\-]+(?:\s+[A-Z][\w'\-]+){0,2})"
)
_DAYS = re.compile(r"\b(\d{1,2})\s*-?\s*days?\b", re.IGNORECASE)
_TODAY = re.compile(r"Today is (\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    """One scripted response: text and/or tool calls, how it ends, and any injected fault."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    markers: frozenset[str] = field(default_factory=frozenset)


def markers_in(text: str) -> frozenset[str]:
    return frozenset(m for m in _MARKER.findall(text) if m in MARKERS)


def strip_markers(text: str) -> str:
    return _MARKER.sub("", text).strip()


def find_place(text: str) -> str | None:
    for place in KNOWN_PLACES:
        if re.search(rf"\b{re.escape(place)}\b", text, re.IGNORECASE):
            return place
    match = _PLACE_AFTER.search(text)
    return match.group(1) if match else None


TRAVEL_TOOLS = ("get_weather_forecast", "get_local_events")


def reply_to(messages: list[dict[str, Any]], offered_tools: Mapping[str, dict[str, Any]]) -> Reply:
    """The reply to a chat-completions request; ``offered_tools`` maps each offered tool's name
    to its JSON schema."""
    user_turns = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not user_turns:
        return Reply(text="Hello! Where would you like to travel?")
    last_user = user_turns[-1]
    request = _content(messages[last_user])
    markers = markers_in(request)
    request = strip_markers(request)
    earlier = [strip_markers(_content(messages[i])) for i in user_turns[:-1]]
    tool_results = [m for m in messages[last_user + 1 :] if m.get("role") == "tool"]
    today = _today(messages)

    if "content-filter" in markers:
        return Reply(finish_reason="content_filter", markers=markers)
    if "echo" in markers:
        # The message itself is the answer: tests of how clients render model text (Markdown,
        # HTML that must stay text) choose that text exactly.
        return Reply(text=request, markers=markers)
    place = find_place(request)
    days = _days(request)
    round_number = sum(1 for m in messages[last_user:] if m.get("role") == "assistant")
    own_tools = [name for name in offered_tools if name not in TRAVEL_TOOLS]
    if own_tools and not any(name in offered_tools for name in TRAVEL_TOOLS):
        call_id = f"call_{round_number}_{last_user}"
        return _any_agent(request, markers, own_tools, offered_tools, tool_results, call_id)
    wants_tools = place is not None and "get_weather_forecast" in offered_tools
    if wants_tools and (not tool_results or "tool-loop" in markers):
        weather = {"location": place, "days": days}
        if "bad-arguments" in markers:
            weather["days"] = 99  # beyond the tool's range: its validation refuses it
        calls = [
            ToolCall(
                f"call_w{round_number}_{last_user}",
                "get_weather_forecast",
                json.dumps(weather),
            )
        ]
        if "get_local_events" in offered_tools:
            end = today + timedelta(days=days - 1)
            arguments = {"location": place, "start": today.isoformat(), "end": end.isoformat()}
            calls.append(
                ToolCall(
                    f"call_e{round_number}_{last_user}", "get_local_events", json.dumps(arguments)
                )
            )
        return Reply(tool_calls=tuple(calls), finish_reason="tool_calls", markers=markers)
    text = _plan(place, days, tool_results, earlier) if place else _no_place(request, earlier)
    return Reply(text=text, markers=markers)


def _any_agent(
    request: str,
    markers: frozenset[str],
    names: list[str],
    schemas: Mapping[str, dict[str, Any]],
    tool_results: list[dict[str, Any]],
    call_id: str,
) -> Reply:
    """Any other agent: call its first tool once (a handoff tool with ``[[handoff]]``), with
    arguments made from the tool's schema, then answer with what the tool returned."""
    if not tool_results:
        handoffs = [name for name in names if name.startswith("transfer_to_")]
        tools = [name for name in names if not name.startswith("transfer_to_")]
        chosen = handoffs[0] if "handoff" in markers and handoffs else (tools or names)[0]
        arguments = (
            {"unexpected": True}
            if "bad-arguments" in markers
            else _arguments_for(schemas.get(chosen) or {}, request)
        )
        call = ToolCall(call_id, chosen, json.dumps(arguments))
        return Reply(tool_calls=(call,), finish_reason="tool_calls", markers=markers)
    said = "; ".join(_content(result) for result in tool_results)
    return Reply(text=f"Done: {said}", markers=markers)


def _arguments_for(schema: dict[str, Any], request: str) -> dict[str, Any]:
    """Values for the schema's required parameters, from the request where it can."""
    properties = schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in schema.get("required") or []:
        spec = properties.get(name) or {}
        kind = spec.get("type")
        if spec.get("enum"):
            arguments[name] = spec["enum"][0]
        elif kind == "integer":
            arguments[name] = _days(request)
        elif kind == "number":
            arguments[name] = 100
        elif kind == "boolean":
            arguments[name] = True
        else:
            arguments[name] = find_place(request) or request[:60]
    return arguments


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _today(messages: list[dict[str, Any]]) -> date:
    for message in messages:
        if message.get("role") == "system":
            match = _TODAY.search(_content(message))
            if match:
                return date.fromisoformat(match.group(1))
    return date(2025, 1, 1)


def _days(text: str) -> int:
    match = _DAYS.search(text)
    return max(1, min(7, int(match.group(1)))) if match else 3


def _recall(earlier: list[str]) -> str:
    if not earlier:
        return ""
    previous = earlier[-1]
    if len(previous) > 60:
        previous = previous[:57] + "..."
    return f'Earlier you asked: "{previous}". I have kept that in mind.\n'


_CHEAPER = re.compile(r"\b(cheap|cheaper|budget|less money|save money)\b", re.IGNORECASE)

# Activities for a plan, used in order so that no two days read the same.
DRY_DAY = (
    "A walking tour of the old town, then a picnic in a park",
    "A bike ride along the waterfront and a market lunch",
    "A day trip to the coast or the hills nearby",
    "Street art and viewpoints, with sunset from the highest one",
    "A boat trip, then dinner where the locals eat",
    "Gardens in the morning and a food tour in the afternoon",
    "A hike just outside the city and a slow evening",
)
WET_DAY = (
    "Museums in the morning and a long lunch indoors",
    "A covered market, a cooking class and a café afternoon",
    "Galleries and a concert hall or a cinema",
    "Historic interiors: a palace, a library and a bookshop",
    "A spa or a bath house, then a cosy dinner",
    "An aquarium or a science museum, and tapas-style snacks",
    "Indoor markets and a tasting of local specialities",
)
WITHOUT_FORECAST = (
    "Get your bearings on foot in the old town",
    "The main museum and the market hall",
    "A neighbourhood away from the centre, and its parks",
    "A day trip by train",
    "Viewpoints, cafés and an early dinner",
    "Whatever you liked best so far, at a slower pace",
    "Souvenirs and a farewell dinner",
)
BUDGET_TIPS = (
    "stay a little outside the centre, near public transport",
    "buy a day pass instead of taking taxis",
    "eat your main meal at lunchtime, when set menus are cheaper",
    "favour the walking tours, parks and viewpoints of the plan over paid attractions",
)


def _no_place(request: str, earlier: list[str]) -> str:
    remembered = [p for p in (find_place(e) for e in earlier) if p]
    if not remembered:
        return "Where would you like to go? Name a city and how many days you have."
    place = remembered[-1]
    if _CHEAPER.search(request):
        tips = "; ".join(BUDGET_TIPS)
        return _recall(earlier) + f"To keep {place} cheaper: {tips}."
    return (
        _recall(earlier)
        + f"We were talking about {place}. Tell me how many days you have and I will plan them."
    )


def _plan(place: str, days: int, tool_results: list[dict[str, Any]], earlier: list[str]) -> str:
    weather, events = None, []
    notes = []
    for result in tool_results:
        try:
            payload = json.loads(result.get("content") or "{}")
        except json.JSONDecodeError:
            continue
        if "error" in payload:
            notes.append(f"(A tool reported: {payload['error']}.)")
        elif "days" in payload:
            weather = payload
        elif "events" in payload:
            events = payload["events"]
    where = weather["location"] if weather else place
    lines = [f"Here is your {days}-day plan for {where}.", _recall(earlier).rstrip("\n")]
    lines.extend(notes)
    if weather is None:
        lines.append("Without a forecast, check the weather before you go.")
    forecast = weather["days"] if weather else []
    used = {"dry": 0, "wet": 0, "none": 0}
    for number in range(1, days + 1):
        day = forecast[number - 1] if number - 1 < len(forecast) else None
        lines.append(_day_line(number, day, events, used))
    lines.append("Enjoy your trip!")
    return "\n".join(line for line in lines if line)


def _day_line(
    number: int, day: dict[str, Any] | None, events: list[dict[str, Any]], used: dict[str, int]
) -> str:
    if day is None:
        activity = WITHOUT_FORECAST[used["none"] % len(WITHOUT_FORECAST)]
        used["none"] += 1
        return f"Day {number}: {activity}."
    conditions = str(day.get("conditions", "unknown"))
    wet = any(word in conditions for word in ("rain", "drizzle", "shower", "snow", "thunder"))
    kind, choices = ("wet", WET_DAY) if wet else ("dry", DRY_DAY)
    activity = choices[used[kind] % len(choices)]
    used[kind] += 1
    line = (
        f"Day {number} ({day.get('date')}): {conditions}, {_degrees(day.get('min_c'))} to "
        f"{_degrees(day.get('max_c'))} °C. {activity}."
    )
    todays = [e for e in events if e.get("date") == day.get("date")]
    if todays:
        line += f" In the evening: {todays[0].get('name')} at {todays[0].get('venue')}."
    return line


def _degrees(value: Any) -> str:
    return f"{value:.0f}" if isinstance(value, int | float) else "?"
