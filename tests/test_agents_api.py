"""``GET /api/agents`` and ``GET .../messages`` over HTTP, held against the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, Api
from .devhost_process import running_devhost
from .standins import scripted_services
from .test_openapi import DOCUMENT, Conformance

MESSAGES = "/api/agents/{agent}/conversations/{cid}/messages"


@pytest.fixture(scope="module")
def base_url(redis_port: int) -> Iterator[str]:
    with scripted_services(create_model_app(), redis_port) as env, running_devhost(env) as url:
        yield url


@pytest.fixture(scope="module")
def check() -> Conformance:
    return Conformance(json.loads(DOCUMENT.read_text(encoding="utf-8")))


def test_the_agents_are_listed(api: Api, check: Conformance) -> None:
    response = api.http.get("/api/agents")
    check.response("GET", "/api/agents", response)
    assert response.json()["agents"] == [
        {
            "name": "travelplanner",
            "description": "Plans trips day by day around the weather forecast and local events.",
            "kind": "agentstream",
        }
    ]


def _turn(api: Api, cid: str | None, message: str) -> str:
    response = api.start(message) if cid is None else api.send(cid, message)
    assert response.status_code == 202, response.text
    body = response.json()
    assert api.read_run(body["conversation_id"], body["cursor"])[-1]["type"] == "run.completed"
    return body["conversation_id"]


def test_the_turns_come_back_as_json_newest_last_and_paged(api: Api, check: Conformance) -> None:
    cid = _turn(api, None, "Plan 2 days in Lisbon")
    _turn(api, cid, "Make it cheaper")
    path = f"{AGENT}/conversations/{cid}/messages"

    whole = api.http.get(path)
    check.response("GET", MESSAGES, whole)
    body = whole.json()
    assert body["conversation_id"] == cid and body["agent"] == "travelplanner"
    assert body["next_cursor"] is None
    first, second = body["turns"]
    assert (first["turn"], first["user"]) == (0, "Plan 2 days in Lisbon")
    assert first["assistant"].startswith("Here is your 2-day plan for Lisbon")
    assert [c["name"] for c in first["tool_calls"]] == ["get_weather_forecast", "get_local_events"]
    weather = first["tool_calls"][0]
    assert json.loads(weather["arguments"]) == {"location": "Lisbon", "days": 2}
    assert json.loads(weather["result"])["location"].startswith("Lisbon")
    assert (second["turn"], second["user"], second["tool_calls"]) == (1, "Make it cheaper", [])
    assert "cheaper" in second["assistant"]

    newest = api.http.get(path, params={"limit": 1}).json()
    assert [t["turn"] for t in newest["turns"]] == [1] and newest["next_cursor"] == "1"
    older = api.http.get(path, params={"limit": 1, "cursor": newest["next_cursor"]}).json()
    assert older["turns"] == [first] and older["next_cursor"] is None


def test_unknown_agents_conversations_and_bad_parameters(api: Api, check: Conformance) -> None:
    cid = _turn(api, None, "Hello")
    unknown = "0" * 32
    for url, status, code in [
        (f"/api/agents/nobody/conversations/{cid}/messages", 404, "unknown_agent"),
        (f"{AGENT}/conversations/{unknown}/messages", 404, "conversation_not_found"),
        (f"{AGENT}/conversations/not-an-id/messages", 400, "invalid_conversation_id"),
        (f"{AGENT}/conversations/{cid}/messages?limit=0", 400, "invalid_limit"),
        (f"{AGENT}/conversations/{cid}/messages?cursor=x", 400, "invalid_cursor"),
    ]:
        response = api.http.get(url)
        check.response("GET", MESSAGES, response)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), url
