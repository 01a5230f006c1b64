"""The Responses-compatible surface over HTTP: the real ``openai`` package against the
development host process, real Redis and the scripted model."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis
import redis.asyncio as aioredis

from agentstream.api.responses import records
from agentstream.api.responses.translate import ResponseMeta
from agentstream.streamlog.keys import meta_key, run_records_key, stream_key
from agentstream.streamlog.runlog import RunLog
from agentstream_dev.scripted_model.server import create_app as create_model_app

from . import responses_sdk_scenario as scenario
from .api_client import Api
from .devhost_process import DevHostProcess, devhost_process
from .model_gate import HELD, ModelGate
from .redis_server import free_port
from .standins import scripted_services
from .test_openapi import DOCUMENT, Conformance

V1 = "/api/v1"


@pytest.fixture(scope="module")
def gate() -> ModelGate:
    return ModelGate(create_model_app(delay_seconds=0.002))


@pytest.fixture(scope="module")
def app_env(redis_port: int, gate: ModelGate) -> Iterator[dict[str, str]]:
    with scripted_services(gate, redis_port) as services:
        yield {
            **services,
            "STREAM_KEEPALIVE_SECONDS": "1",
            "MODEL_TIMEOUT_SECONDS": "10",
            "DELTA_FLUSH_CHARS": "16",
        }


@pytest.fixture(scope="module")
def devhost(app_env: dict[str, str], gate: ModelGate) -> Iterator[DevHostProcess]:
    with devhost_process(app_env, free_port()) as process:
        yield process
        gate.open()  # let held model calls go before the host stops


@pytest.fixture(scope="module")
def base_url(devhost: DevHostProcess) -> str:
    return devhost.base_url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=base_url + V1, api_key="sk-test", _strict_response_validation=True
    ) as sdk:
        yield sdk


def restarted_response(base_url: str, client: openai.OpenAI, sync: redis.Redis) -> str:
    """A response whose run crashed after text and a tool call and was delivered again: the
    real entity then writes ``run.restarted`` and the whole run again."""
    first = client.responses.create(model="travelplanner", input="Plan 1 day in Lisbon")
    assert first.conversation is not None or "conversation" in first.model_extra
    cid = first.model_dump()["conversation"]["id"].removeprefix("conv_")
    run_id = uuid.uuid4().hex
    message = "Plan 2 days in Rome"
    crashed = RunLog(sync, cid, run_id, ttl_seconds=600, maxlen=10_000)
    sync.hset(meta_key(cid), mapping={"active_run": run_id, "status:" + run_id: "queued"})
    crashed.append("run.queued", {"message": message})
    start = sync.xrevrange(stream_key(cid), count=1)[0][0]
    sync.hset(meta_key(cid), "latest_start", start)
    crashed.begin("the-delivery-whose-worker-died")
    crashed.append("run.started", {"attempt": 1})
    crashed.append("message.delta", {"text": "Let me look"})
    crashed.append(
        "tool.call", {"call_id": "c1", "name": "get_weather_forecast", "arguments": "{}"}
    )
    crashed.append("message.delta", {"text": "Half a pla"})
    meta = ResponseMeta(run_id, cid, "travelplanner", background=True)

    async def save() -> None:
        async with aioredis.Redis(port=sync.connection_pool.connection_kwargs["port"]) as r:
            await records.save(r, meta, start, 3600)

    asyncio.run(save())
    delivered = httpx.post(  # what the Durable backend does: the same operation, again
        f"{base_url}/runtime/webhooks/durabletask/entities/travelplanner/{cid}",
        params={"op": "run"},
        json=json.dumps({"run_id": run_id, "message": message}),
    )
    assert delivered.status_code == 202
    return f"resp_{run_id}"


def test_the_sdk_scenario_with_the_newest_sdk(
    base_url: str, client: openai.OpenAI, redis_store: redis.Redis
) -> None:
    restarted = restarted_response(base_url, client, redis_store)
    events = [e.model_dump() for e in client.responses.retrieve(restarted, stream=True)]
    done = [e["item"]["status"] for e in events if e["type"] == "response.output_item.done"]
    # The crashed attempt: its first text closed by its tool call, then its open text and call.
    assert done[:3] == ["completed", "incomplete", "incomplete"]
    assert events[-1]["type"] == "response.completed"
    assert scenario.text_of(events) == client.responses.retrieve(restarted).output_text
    scenario.main(base_url, stored_ids=[restarted], cuts=200)


def test_keepalives_are_comments_that_the_sdk_passes_over(
    base_url: str, client: openai.OpenAI, gate: ModelGate
) -> None:
    held = gate.wait_held(0)
    stream = client.responses.create(
        model="travelplanner", input=f"Plan 3 days in Bergen {HELD}", background=True, stream=True
    )
    first = next(iter(stream))
    response_id = first.response.id
    assert gate.wait_held(held + 1) == held + 1  # the gate stays closed until the module's end
    with (
        httpx.Client(base_url=base_url, timeout=30) as http,
        http.stream("GET", f"{V1}/responses/{response_id}", params={"stream": "true"}) as raw,
    ):
        lines = []
        for line in raw.iter_lines():
            lines.append(line)
            if line == ": keep-alive":
                break
    assert not any(line.startswith(("id:", "retry:")) for line in lines)
    assert any(line == "event: response.in_progress" for line in lines)
    # The SDK's stream sat idle as long: it has keep-alives queued, and reads on through them.
    gate.open()
    try:
        rest = list(stream)
    finally:
        gate.close()
    assert rest[-1].type == "response.completed"
    assert [e.sequence_number for e in [first, *rest]] == list(range(len(rest) + 1))


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_bad_requests_are_openai_shaped_400s(base_url: str) -> None:
    http = httpx.Client(base_url=base_url + V1, timeout=30)
    cases = [
        (b"{", "invalid_json", None),
        ({"input": "hi"}, "missing_required_parameter", "model"),
        ({"model": "travelplanner"}, "missing_required_parameter", "input"),
        ({"model": 3, "input": "hi"}, "model_not_found", "model"),
        ({"model": "travelplanner", "input": 3}, "invalid_value", "input"),
        ({"model": "travelplanner", "input": [{"role": "system", "content": "x"}]}, None, "input"),
        (
            {
                "model": "travelplanner",
                "input": [{"role": "user", "content": [{"type": "input_image", "url": "x"}]}],
            },
            "invalid_value",
            "input",
        ),
        ({"model": "travelplanner", "input": "   "}, "invalid_value", "input"),
        ({"model": "travelplanner", "input": "hi", "store": False}, "invalid_value", "store"),
        ({"model": "travelplanner", "input": "hi", "tools": [{"type": "function"}]}, None, "tools"),
        ({"model": "travelplanner", "input": "hi", "stream": "yes"}, "invalid_value", "stream"),
        ({"model": "travelplanner", "input": "hi", "conversation": "c1"}, None, "conversation"),
        (
            {"model": "travelplanner", "input": "hi", "previous_response_id": "resp_x"},
            "previous_response_not_found",
            "previous_response_id",
        ),
        (
            {
                "model": "travelplanner",
                "input": "hi",
                "previous_response_id": "resp_" + "0" * 32,
                "conversation": "conv_" + "0" * 32,
            },
            None,
            "previous_response_id",
        ),
    ]
    for body, code, param in cases:
        sent = http.post("/responses", content=body) if isinstance(body, bytes) else None
        sent = sent or http.post("/responses", json=body)
        error = _error(sent, 400)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param, (body, error)
        if code is not None:
            assert error["code"] == code, (body, error)
    unknown = _error(http.post("/responses/resp_" + "0" * 32 + "/cancel"), 404)
    assert unknown["code"] == "response_not_found"
    created = http.post(
        "/responses", json={"model": "travelplanner", "input": "Plan 1 day in Nice"}
    )
    assert created.status_code == 200
    bad_cut = http.get(f"/responses/{created.json()['id']}", params={"starting_after": "-1"})
    assert _error(bad_cut, 400)["param"] == "starting_after"
    missing = {"model": "travelplanner", "input": "hi", "conversation": "conv_" + "0" * 32}
    assert _error(http.post("/responses", json=missing), 404)["code"] == "conversation_not_found"


def test_a_failed_run_is_a_failed_response_with_the_projects_code(client: openai.OpenAI) -> None:
    failed = client.responses.create(
        model="travelplanner", input="Tell me about trains [[fail-always:500]]"
    )
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.code == "server_error"
    assert failed.error.message.startswith("model_unavailable: ")
    assert failed.usage is None


def test_a_conversation_continues_by_its_id(client: openai.OpenAI) -> None:
    first = client.responses.create(model="travelplanner", input="Plan 2 days in Madrid")
    conversation = first.model_dump()["conversation"]["id"]
    second = client.responses.create(
        model="travelplanner", input="What about something cheaper?", conversation=conversation
    )
    assert second.status == "completed"
    assert 'Earlier you asked: "Plan 2 days in Madrid"' in second.output_text
    assert second.model_dump()["conversation"]["id"] == conversation


def test_after_the_stream_expired_a_finished_response_is_served_from_its_run_record(
    base_url: str, client: openai.OpenAI, redis_store: redis.Redis
) -> None:
    read = client.responses.create(model="travelplanner", input="Plan 1 day in Bath")
    assert read.status == "completed"  # a plain create reads the run to its end
    unread = client.responses.create(
        model="travelplanner", input="Plan 1 day in York", background=True
    )
    failed = client.responses.create(
        model="travelplanner", input="Trains? [[fail-always:500]]", background=True
    )
    conversations = {
        response.id: response.model_dump()["conversation"]["id"].removeprefix("conv_")
        for response in (read, unread, failed)
    }
    for response in (unread, failed):  # the runs end while no Responses reader looks
        Api(base_url).read_run(conversations[response.id])
    # What a reader of the stream saw: the Response its last event carried.
    before = {
        response.id: list(client.responses.retrieve(response.id, stream=True))[-1].response
        for response in (read, unread, failed)
    }
    assert before[read.id].model_dump() == read.model_dump()
    assert [r.status for r in before.values()] == ["completed", "completed", "failed"]
    assert any(item.type == "mcp_call" for item in before[unread.id].output)

    # The streams expire by TTL (shortened, on Redis's clock); the run records outlive them.
    for cid in conversations.values():
        redis_store.pexpire(stream_key(cid), 1)
        redis_store.pexpire(meta_key(cid), 1)
    while redis_store.exists(*(stream_key(cid) for cid in conversations.values())):
        pass  # EXISTS sees a key expire the moment it does: polling, no sleep
    assert redis_store.exists(*(run_records_key(cid) for cid in conversations.values())) == 3

    for response_id, response in before.items():
        assert client.responses.retrieve(response_id).model_dump() == response.model_dump()
        assert client.responses.cancel(response_id).model_dump() == response.model_dump()
        for after in (None, 3):
            with pytest.raises(openai.BadRequestError) as streaming:
                list(client.responses.retrieve(response_id, stream=True, starting_after=after))
            assert streaming.value.code == "response_stream_expired"
            assert streaming.value.param == "stream"
            assert "retrieve it without stream=true" in streaming.value.message

    # previous_response_id may point at a response whose stream expired; the new turn's stream
    # does not hold the old run, whose record still serves it.
    follow_up = client.responses.create(
        model="travelplanner", input="Something cheaper?", previous_response_id=unread.id
    )
    assert follow_up.status == "completed"
    assert 'Earlier you asked: "Plan 1 day in York"' in follow_up.output_text
    assert client.responses.retrieve(unread.id).model_dump() == before[unread.id].model_dump()


def test_a_response_whose_stream_expired_before_it_ended_is_gone(
    client: openai.OpenAI, redis_store: redis.Redis, gate: ModelGate
) -> None:
    held_before = gate.wait_held(0)
    held = client.responses.create(
        model="travelplanner", input=f"Plan 1 day in Hull {HELD}", background=True
    )
    assert gate.wait_held(held_before + 1) == held_before + 1  # held until the module's end
    cid = held.model_dump()["conversation"]["id"].removeprefix("conv_")
    redis_store.pexpire(stream_key(cid), 1)
    redis_store.pexpire(meta_key(cid), 1)
    while redis_store.exists(stream_key(cid), meta_key(cid)):
        pass
    assert not redis_store.exists(run_records_key(cid))
    for read in (
        lambda: client.responses.retrieve(held.id),
        lambda: list(client.responses.retrieve(held.id, stream=True)),
        lambda: client.responses.cancel(held.id),
    ):
        with pytest.raises(openai.NotFoundError) as lost:
            read()
        assert lost.value.code == "response_expired"


def test_a_deleted_conversation_takes_its_responses_with_it(
    base_url: str, client: openai.OpenAI, redis_store: redis.Redis
) -> None:
    response = client.responses.create(model="travelplanner", input="Plan 1 day in Ghent")
    cid = response.model_dump()["conversation"]["id"].removeprefix("conv_")
    assert redis_store.exists(run_records_key(cid))
    assert (
        Api(base_url).http.delete(f"/api/agents/travelplanner/conversations/{cid}").status_code
        == 204
    )
    assert not redis_store.exists(run_records_key(cid))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_the_answers_match_the_openapi_document(base_url: str) -> None:
    check = Conformance(json.loads(DOCUMENT.read_text(encoding="utf-8")))
    http = httpx.Client(base_url=base_url, timeout=30)
    created = http.post(f"{V1}/responses", json={"model": "travelplanner", "input": "Plan 1 day"})
    check.response("POST", f"{V1}/responses", created)
    one = f"{V1}/responses/{{response_id}}"
    path = f"{V1}/responses/{created.json()['id']}"
    check.response("GET", one, http.get(path))
    streamed = http.get(path, params={"stream": "true", "starting_after": "2"})
    check.response("GET", one, streamed)
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line[:6] == "data: "]
    assert events[0]["sequence_number"] == 3
    for event in events:
        check.validator({"$ref": "#/components/schemas/ResponseStreamEvent"}).validate(event)
    check.response("POST", one + "/cancel", http.post(path + "/cancel"))
    check.response("GET", f"{V1}/models", http.get(f"{V1}/models"))
    for method, route, answer in [
        ("POST", f"{V1}/responses", http.post(f"{V1}/responses", content=b"[")),
        ("POST", f"{V1}/responses", http.post(f"{V1}/responses", json={"model": "x"})),
        ("GET", one, http.get(f"{V1}/responses/resp_{'0' * 32}")),
        ("GET", one, http.get(path, params={"stream": "maybe"})),
        ("POST", one + "/cancel", http.post(f"{V1}/responses/nope/cancel")),
    ]:
        assert answer.status_code >= 400
        check.response(method, route, answer)


def test_the_sdks_bearer_token_never_reaches_a_log_line(
    client: openai.OpenAI, devhost: DevHostProcess
) -> None:
    response = client.responses.create(model="travelplanner", input="Plan 1 day in Lyon")
    client.responses.retrieve(response.id)
    log = devhost.log_text()
    assert "route=/api/v1/responses/{response_id} status=200" in log  # requests are logged
    assert "sk-test" not in log and "sk-ignored-by-the-app" not in log
