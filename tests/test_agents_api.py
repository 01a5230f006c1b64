"""``GET /api/agents`` and ``GET .../messages`` over HTTP, held against the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from agentstream.streamlog.keys import meta_key
from agentstream.streamlog.runlog import RunLog
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


def test_a_completed_turn_is_listed_before_the_entity_commits_it(
    api: Api, redis_store: redis.Redis
) -> None:
    """The terminal event (with the run's turn) is written before the entity's state is saved: a
    client that read ``run.completed`` and asks for the messages at once still gets that turn."""
    cid = _turn(api, None, "Plan 2 days in Lisbon")
    # A second run that completed in the stream log while its entity commit has not landed yet.
    run_id = "d" * 32
    meta = meta_key(cid)
    redis_store.hset(meta, mapping={f"status:{run_id}": "queued"})
    redis_store.hset(meta, "runs", f"{redis_store.hget(meta, 'runs') or ''} {run_id}".strip())
    log = RunLog(redis_store, cid, run_id, ttl_seconds=600, maxlen=10_000)
    log.append("run.queued", {"message": "Make it cheaper"})
    turn = [
        {"role": "user", "content": "Make it cheaper"},
        {"role": "assistant", "content": "Here is a cheaper plan."},
    ]
    log.append("run.completed", {"finish_reason": "stop", "usage": None}, turn=turn)

    turns = api.http.get(f"{AGENT}/conversations/{cid}/messages").json()["turns"]
    assert [t["user"] for t in turns] == ["Plan 2 days in Lisbon", "Make it cheaper"]
    assert turns[1]["assistant"] == "Here is a cheaper plan."
