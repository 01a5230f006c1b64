"""An agent of each kind side by side in one app (``tests/agents_app.py``): the travel planner
(our own), an OpenAI Agents SDK agent and a Microsoft Agent Framework agent, over HTTP against
the development host, real Redis and the scripted model, which calls each agent's tool."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api, text_of
from .devhost_process import running_devhost
from .model_gate import HELD, ModelGate
from .standins import scripted_services
from .test_browser_page import CHROMIUM, CHROMIUM_FLAGS

APP = "tests.agents_app"


@dataclass(frozen=True)
class Kind:
    agent: str
    message: str  # a message the scripted model answers with a call of ``tool``
    tool: str


KINDS = [
    Kind("travelplanner", "Plan 2 days in Lisbon", "get_weather_forecast"),
    Kind("packer", "Pack for 3 days in Oslo", "packing_list"),
    Kind("budget", "My budget for Oslo", "convert_currency"),
]
IDS = [kind.agent for kind in KINDS]


@pytest.fixture(scope="module")
def gate() -> Iterator[ModelGate]:
    gate = ModelGate(create_model_app(delay_seconds=0.002))
    yield gate
    gate.open()


@pytest.fixture(scope="module")
def base_url(redis_port: int, gate: ModelGate) -> Iterator[str]:
    with scripted_services(gate, redis_port) as env:
        settings = {**env, "MODEL_MAX_RETRIES": "0", "DELTA_FLUSH_CHARS": "8"}
        with running_devhost(settings, "--app", APP) as url:
            yield url


@pytest.fixture
def requests_seen(gate: ModelGate) -> list[dict[str, Any]]:
    return gate.app.state.scripted.requests


def api_for(base_url: str, kind: Kind) -> Api:
    return Api(base_url, kind.agent)


def started(response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return response.json()


def test_the_app_lists_one_agent_of_each_kind(base_url: str) -> None:
    api = Api(base_url)
    agents = api.http.get("/api/agents").json()["agents"]
    assert [(a["name"], a["kind"]) for a in agents] == [
        ("travelplanner", "agentstream"),
        ("packer", "openai-agents"),
        ("budget", "agent-framework"),
    ]


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_run_streams_text_the_tool_call_and_its_result(base_url: str, kind: Kind) -> None:
    api = api_for(base_url, kind)
    body = started(api.start(kind.message))
    assert body["entity_id"] == f"@{kind.agent}@{body['conversation_id']}"
    events = api.read_run(body["conversation_id"])
    types = [e["type"] for e in events]
    assert types[:2] == ["run.queued", "run.started"] and types[-1] == "run.completed"
    call = next(e for e in events if e["type"] == "tool.call")
    result = next(e for e in events if e["type"] == "tool.result")
    assert call["name"] == kind.tool and json.loads(call["arguments"])
    assert (result["call_id"], result["name"]) == (call["call_id"], kind.tool)
    assert "error" not in result["result"]
    assert types.index("tool.result") < types.index("message.delta")
    assert text_of(events)
    assert events[-1]["usage"]["total_tokens"] > 0
    api.http.close()


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_resuming_at_random_points_gives_the_uninterrupted_read(base_url: str, kind: Kind) -> None:
    api = api_for(base_url, kind)
    chance = random.Random(kind.agent)
    cid = started(api.start(f"{kind.message} [[slow]]"))["conversation_id"]
    collected: list[dict[str, Any]] = []
    while not collected or collected[-1]["type"] not in ("run.completed", "run.failed"):
        cursor = collected[-1]["id"] if collected else None
        collected.extend(api.read_sse(cid, cursor=cursor, limit=chance.randint(1, 4)))
    assert collected == api.read_sse(cid)
    assert collected[-1]["type"] == "run.completed"
    api.http.close()


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_follow_up_turn_sees_the_earlier_one(
    base_url: str, kind: Kind, requests_seen: list[dict[str, Any]]
) -> None:
    api = api_for(base_url, kind)
    cid = started(api.start(kind.message))["conversation_id"]
    api.read_run(cid)
    follow_up = f"And once more, {kind.agent}"
    api.read_run(cid, started(api.send(cid, follow_up))["cursor"])
    sent = next(
        r["body"]["messages"]
        for r in reversed(requests_seen)
        if any(m.get("content") == follow_up for m in r["body"]["messages"])
    )
    roles = [m["role"] for m in sent if m["role"] != "system"]
    assert [m.get("content") for m in sent if m["role"] == "user"] == [kind.message, follow_up]
    earlier = roles[: roles.index("user", 1)]  # the earlier turn, whole
    assert earlier[0] == "user" and "tool" in earlier and earlier[-1] == "assistant"
    turns = api.http.get(f"{api.agent}/conversations/{cid}/messages").json()["turns"]
    assert [t["user"] for t in turns] == [kind.message, follow_up]
    assert [c["name"] for c in turns[0]["tool_calls"]][:1] == [kind.tool]
    api.http.close()


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_cancel_ends_the_run_with_run_cancelled(base_url: str, kind: Kind, gate: ModelGate) -> None:
    api = api_for(base_url, kind)
    gate.close()
    try:
        body = started(api.start(f"{kind.message} {HELD}"))
        assert gate.wait_held(1) == 1  # the run has started and waits for the model
        cancel = api.http.post(
            f"{api.agent}/conversations/{body['conversation_id']}/runs/{body['run_id']}/cancel"
        )
        assert cancel.status_code == 202
    finally:
        gate.open()
    events = api.read_run(body["conversation_id"])
    assert events[-1]["type"] == "run.cancelled"
    assert "run.completed" not in [e["type"] for e in events]
    api.http.close()


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_model_failure_ends_with_run_failed_and_its_code(base_url: str, kind: Kind) -> None:
    api = api_for(base_url, kind)
    body = started(api.start(f"{kind.message} [[fail-always:500]]"))
    last = api.read_run(body["conversation_id"])[-1]
    assert last["type"] == "run.failed" and last["code"] == "model_unavailable"
    assert "scripted" not in last["message"]
    api.http.close()


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_arguments_that_fail_validation_go_back_to_the_model_and_the_run_goes_on(
    base_url: str, kind: Kind
) -> None:
    api = api_for(base_url, kind)
    body = started(api.start(f"{kind.message} [[bad-arguments]]"))
    events = api.read_run(body["conversation_id"])
    result = next(e for e in events if e["type"] == "tool.result")
    assert result["name"] == kind.tool and "rror" in result["result"]
    assert events[-1]["type"] == "run.completed"
    api.http.close()


def test_a_handoff_streams_as_the_sdk_makes_it_a_tool_call(base_url: str) -> None:
    api = Api(base_url, "packer")
    body = started(api.start("Any tips for Oslo? [[handoff]]"))
    events = api.read_run(body["conversation_id"])
    call = next(e for e in events if e["type"] == "tool.call")
    result = next(e for e in events if e["type"] == "tool.result")
    assert call["name"] == "transfer_to_local_guide"
    assert json.loads(result["result"]) == {"assistant": "local_guide"}
    assert events[-1]["type"] == "run.completed"
    api.http.close()


def test_a_conversation_belongs_to_the_agent_that_started_it(base_url: str) -> None:
    planner, packer = Api(base_url, "travelplanner"), Api(base_url, "packer")
    cid = started(planner.start("Plan 2 days in Lisbon"))["conversation_id"]
    planner.read_run(cid)
    for response in (
        packer.send(cid, "Pack for it"),
        packer.http.get(f"{packer.agent}/conversations/{cid}"),
        packer.http.get(f"{packer.agent}/conversations/{cid}/messages"),
        packer.http.delete(f"{packer.agent}/conversations/{cid}"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "conversation_not_found"
    assert planner.http.get(f"{planner.agent}/conversations/{cid}").status_code == 200
    planner.http.close()
    packer.http.close()


@pytest.mark.parametrize("kind", KINDS[1:], ids=IDS[1:])
def test_the_console_client_talks_to_the_agent_it_is_given(base_url: str, kind: Kind) -> None:
    command = [sys.executable, "-m", "agentstream_client", "--url", base_url]
    ran = subprocess.run(
        [*command, "--agent", kind.agent, "-m", kind.message],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("Done: ")  # the scripted answer of an agent other than ours
    unknown = subprocess.run(
        [*command, "--agent", "nobody", "-m", "hi"], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2
    assert "(unknown_agent)" in unknown.stderr


@pytest.mark.slow  # Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it)")
def test_the_browser_page_picks_the_agent(base_url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        page = browser.new_page()
        page.goto(f"{base_url}/api/ui")
        page.wait_for_function("document.querySelectorAll('#agent option').length === 3")
        options = page.locator("#agent option")
        assert options.all_inner_texts() == ["travelplanner", "packer", "budget"]
        assert page.input_value("#agent") == "travelplanner"
        page.select_option("#agent", "budget")
        page.wait_for_url("**/api/ui?agent=budget")
        page.wait_for_function("document.querySelectorAll('#agent option').length === 3")
        assert page.input_value("#agent") == "budget"
        page.fill("#message", "My budget for Oslo")
        page.click("#send")
        page.wait_for_function("window.agentState.finished && !window.agentState.sending")
        assert "Done: 100.00 USD is 92.00 EUR" in page.inner_text("#output")
        browser.close()


def test_an_idempotency_key_used_with_another_agent_is_refused(base_url: str) -> None:
    planner, packer = Api(base_url, "travelplanner"), Api(base_url, "packer")
    first = planner.start("Plan 2 days in Lisbon", **{"Idempotency-Key": "trip-42"})
    assert first.status_code == 202
    again = planner.start("Plan 2 days in Lisbon", **{"Idempotency-Key": "trip-42"})
    assert again.json()["conversation_id"] == first.json()["conversation_id"]
    elsewhere = packer.start("Plan 2 days in Lisbon", **{"Idempotency-Key": "trip-42"})
    assert elsewhere.status_code == 422
    assert elsewhere.json()["error"]["code"] == "idempotency_key_reused"
    planner.read_run(first.json()["conversation_id"])
    planner.http.close()
    packer.http.close()
