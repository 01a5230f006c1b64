"""The whole product over real HTTP: development host process, real Redis, scripted model."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from agentstream.streamlog.keys import meta_key, stream_key
from agentstream.streamlog.runlog import RunLog
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, Api, started, text_of
from .devhost_process import running_devhost
from .func_host import running_app
from .standins import scripted_services


@pytest.fixture(scope="module")
def model_app() -> Any:
    return create_model_app(delay_seconds=0.003, stall_seconds=10.0)


@pytest.fixture(scope="module")
def app_env(redis_port: int, model_app: Any) -> Iterator[dict[str, str]]:
    with scripted_services(model_app, redis_port) as services:
        yield {
            **services,
            "MODEL_TIMEOUT_SECONDS": "3",
            "MODEL_MAX_RETRIES": "1",
            "STREAM_KEEPALIVE_SECONDS": "1",
            "DELTA_FLUSH_CHARS": "16",
        }


@pytest.fixture(scope="module")
def base_url(app_env: dict[str, str]) -> Iterator[str]:
    """The development host, or ``func start`` with AGENTSTREAM_E2E_HOST=func (func_host.py)."""
    with running_app(app_env) as url:
        yield url


@pytest.fixture
def model_requests(model_app: Any) -> list[dict[str, Any]]:
    return model_app.state.scripted.requests


PLAN_TYPES = ["run.queued", "run.started", "tool.call", "tool.result", "tool.call", "tool.result"]


def test_a_conversation_streams_as_sse_ndjson_and_text(api: Api) -> None:
    body = started(api.start("Plan 3 days in Lisbon"))
    cid = body["conversation_id"]
    assert body["entity_id"] == f"@travelplanner@{cid}"
    assert body["stream_url"] == f"{AGENT}/conversations/{cid}/stream?cursor={body['cursor']}"
    sse = api.read_run(cid)
    assert sse[0]["id"] == body["cursor"] and sse[0]["message"] == "Plan 3 days in Lisbon"
    assert [e["type"] for e in sse[:6]] == PLAN_TYPES
    assert {e["type"] for e in sse[6:-1]} == {"message.delta"}
    assert sse[-1]["type"] == "run.completed" and sse[-1]["finish_reason"] == "stop"
    assert sse[-1]["usage"]["total_tokens"] > 0
    assert [e["seq"] for e in sse] == list(range(len(sse)))
    plan = text_of(sse)
    assert plan.startswith("Here is your 3-day plan for Lisbon, Portugal.")

    response = api.http.get(
        api.stream_path(cid), params={"cursor": "0"}, headers={"Accept": "application/x-ndjson"}
    )
    assert response.headers["content-type"].startswith("application/x-ndjson")
    ndjson = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert ndjson == sse

    response = api.http.get(
        api.stream_path(cid), params={"cursor": "0"}, headers={"Accept": "text/plain"}
    )
    assert response.text == plan + "\n"

    sse_response = api.http.get(api.stream_path(cid), params={"cursor": "0"})
    assert sse_response.headers["cache-control"] == "no-cache"
    assert sse_response.headers["x-accel-buffering"] == "no"
    assert sse_response.text.startswith("retry: ")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clients_cut_off_at_random_points_reassemble_the_exact_stream(api: Api, seed: int) -> None:
    chance = random.Random(seed)
    body = started(api.start("Plan 5 days in Lisbon [[slow]]"))
    cid = body["conversation_id"]
    collected: list[dict[str, Any]] = []
    cursor: str | None = None
    reconnects = 0
    while not collected or collected[-1]["type"] not in ("run.completed", "run.failed"):
        limit = chance.randint(1, 6)
        if cursor is not None and chance.random() < 0.5:
            part = api.read_sse(cid, cursor="0", last_event_id=cursor, limit=limit)
        else:
            part = api.read_sse(cid, cursor=cursor, limit=limit)
        collected.extend(part)
        cursor = collected[-1]["id"] if collected else None
        reconnects += 1
    uninterrupted = api.read_sse(cid)
    assert collected == uninterrupted
    assert len({e["id"] for e in collected}) == len(collected)
    assert reconnects > 3


def test_second_message_continues_the_conversation(api: Api, model_requests: list) -> None:
    first = started(api.start("Plan 2 days in Lisbon"))
    cid = first["conversation_id"]
    api.read_run(cid)
    second = started(api.send(cid, "Make it cheaper please"))
    assert second["conversation_id"] == cid and second["run_id"] != first["run_id"]
    events = api.read_run(cid)
    assert events[0]["run"] == second["run_id"] and events[0]["type"] == "run.queued"
    assert text_of(events).startswith('Earlier you asked: "Plan 2 days in Lisbon".')
    sent = model_requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
    ]
    assert sent[1]["content"] == "Plan 2 days in Lisbon"

    status = api.http.get(f"{AGENT}/conversations/{cid}").json()
    assert [r["run_id"] for r in status["runs"]] == [first["run_id"], second["run_id"]]
    assert {r["status"] for r in status["runs"]} == {"completed"}
    assert status["active_run"] is None


def test_a_message_during_an_active_run_is_409_and_cancel_ends_the_run(api: Api) -> None:
    first = started(api.start("Plan 5 days in Lisbon [[slow]]"))
    cid, run_id = first["conversation_id"], first["run_id"]
    api.read_sse(cid, limit=7)  # the run is producing text now
    busy = api.send(cid, "and another thing")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "run_active"
    assert busy.json()["error"]["active_run"] == run_id

    cancelled = api.http.post(f"{AGENT}/conversations/{cid}/runs/{run_id}/cancel")
    assert cancelled.status_code == 202
    events = api.read_run(cid)
    assert events[-1]["type"] == "run.cancelled"
    assert "Enjoy your trip!" not in text_of(events)

    again = api.http.post(f"{AGENT}/conversations/{cid}/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_finished"
    after = started(api.send(cid, "Plan 1 day in Lisbon"))  # the lock was released
    assert api.read_run(cid)[-1]["type"] == "run.completed"
    assert after["run_id"] != run_id


def test_a_repeated_idempotency_key_starts_no_second_run(
    api: Api, model_requests: list, redis_store: redis.Redis
) -> None:
    first = started(api.start("Plan 1 day in Lisbon", **{"Idempotency-Key": "new-conv-1"}))
    again = started(api.start("Plan 1 day in Lisbon", **{"Idempotency-Key": "new-conv-1"}))
    assert again == first
    cid = first["conversation_id"]
    api.read_run(cid)
    follow_up = started(api.send(cid, "Plan 2 days in Rome", **{"Idempotency-Key": "msg-1"}))
    repeated = started(api.send(cid, "Plan 2 days in Rome", **{"Idempotency-Key": "msg-1"}))
    assert repeated == follow_up
    api.read_run(cid)
    stream = redis_store.xrange(stream_key(cid))
    queued = [f["run"] for _, f in stream if f["type"] == "run.queued"]
    assert queued == [first["run_id"], follow_up["run_id"]]


def test_a_model_failure_ends_the_run_and_every_reader_finishes(api: Api) -> None:
    body = started(api.start("Tell me about trains [[fail-always:500]]"))
    cid = body["conversation_id"]
    results: list[list[dict[str, Any]]] = []
    readers = [threading.Thread(target=lambda: results.append(api.read_run(cid))) for _ in range(3)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=30)
    assert len(results) == 3
    for events in results:
        assert events[-1]["type"] == "run.failed"
        assert events[-1]["code"] == "model_unavailable"
        assert "500" not in events[-1]["message"]
    assert results[0] == results[1] == results[2]


def test_redelivery_after_a_crash_restarts_once_and_after_the_end_writes_nothing(
    api: Api, base_url: str, redis_store: redis.Redis
) -> None:
    first = started(api.start("Plan 1 day in Lisbon"))
    cid = first["conversation_id"]
    api.read_run(cid)

    # A run that a worker began and then lost (it crashed): queued, attempt 1 started, some text.
    run_id = "c" * 32
    crashed = RunLog(redis_store, cid, run_id, ttl_seconds=600, maxlen=10_000)
    redis_store.hset(meta_key(cid), mapping={"active_run": run_id, "status:" + run_id: "queued"})
    crashed.append("run.queued", {"message": "Plan 2 days in Rome"})
    redis_store.hset(
        meta_key(cid), "latest_start", redis_store.xrevrange(stream_key(cid), count=1)[0][0]
    )
    crashed.begin("the-delivery-whose-worker-died")
    crashed.append("run.started", {"attempt": 1})
    crashed.append("message.delta", {"text": "Half a pla"})

    def deliver() -> None:  # what the Durable backend does: the same operation, again
        payload = json.dumps({"run_id": run_id, "message": "Plan 2 days in Rome"})
        response = httpx.post(
            f"{base_url}/runtime/webhooks/durabletask/entities/travelplanner/{cid}",
            params={"op": "run"},
            json=payload,
        )
        assert response.status_code == 202

    deliver()
    events = api.read_run(cid)
    types = [e["type"] for e in events]
    assert types[:5] == [
        "run.queued",
        "run.started",
        "message.delta",
        "run.restarted",
        "run.started",
    ]
    assert events[3]["attempt"] == 2 and events[4]["attempt"] == 2
    assert types.count("run.completed") == 1 and types[-1] == "run.completed"
    assert [e["seq"] for e in events] == list(range(len(events)))
    entries_after_completion = redis_store.xlen(stream_key(cid))

    deliver()  # after the run finished: must write nothing
    later = started(api.send(cid, "Plan 1 day in Lisbon"))  # queued behind the duplicate
    api.read_run(cid)
    runs_after = [f["run"] for _, f in redis_store.xrange(stream_key(cid))][
        entries_after_completion:
    ]
    assert set(runs_after) == {later["run_id"]}


def test_every_error_status_has_its_json_body(api: Api, redis_store: redis.Redis) -> None:
    body = started(api.start("Plan 1 day in Lisbon"))
    cid = body["conversation_id"]
    events = api.read_run(cid)
    unknown = "0" * 32

    def expect(response: httpx.Response, status: int, code: str) -> None:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == code and error["message"]
        assert "Traceback" not in response.text

    conversations = f"{AGENT}/conversations"
    post = api.http.post
    expect(
        post(conversations, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )
    expect(post(conversations, json={"message": "   "}), 400, "empty_message")
    expect(post(conversations, json={"text": "hi"}), 400, "missing_message")
    expect(post(conversations, json={"message": 5}), 400, "invalid_message")
    expect(post(conversations, json={"message": "x" * 16_001}), 400, "message_too_long")
    expect(
        post(conversations, content=b"x" * 70_000, headers={"content-type": "text/plain"}),
        413,
        "payload_too_large",
    )
    expect(
        post(conversations, content=b"<a/>", headers={"content-type": "application/xml"}),
        415,
        "unsupported_media_type",
    )
    expect(
        post(conversations, json={"message": "hi"}, headers={"Idempotency-Key": "a b"}),
        400,
        "invalid_idempotency_key",
    )
    expect(
        post(f"{AGENT}/conversations/NOT-HEX/messages", json={"message": "hi"}),
        400,
        "invalid_conversation_id",
    )
    expect(
        api.http.get(api.stream_path(cid), params={"cursor": "yesterday"}), 400, "invalid_cursor"
    )
    expect(
        api.http.get(api.stream_path(cid), headers={"Last-Event-ID": "1-2-3"}),
        400,
        "invalid_cursor",
    )
    expect(post(f"{AGENT}/conversations/{cid}/runs/not-a-run/cancel"), 400, "invalid_run_id")

    expect(
        post("/api/agents/weatherman/conversations", json={"message": "hi"}), 404, "unknown_agent"
    )
    expect(
        post(f"{AGENT}/conversations/{unknown}/messages", json={"message": "hi"}),
        404,
        "conversation_not_found",
    )
    expect(api.http.get(api.stream_path(unknown)), 404, "conversation_not_found")
    expect(api.http.get(f"{AGENT}/conversations/{unknown}"), 404, "conversation_not_found")
    expect(post(f"{AGENT}/conversations/{cid}/runs/{unknown}/cancel"), 404, "run_not_found")

    expect(
        api.http.get(api.stream_path(cid), headers={"Accept": "application/json"}),
        406,
        "not_acceptable",
    )

    done = api.http.get(api.stream_path(cid), params={"cursor": events[-1]["id"]})
    assert done.status_code == 204 and done.content == b""

    redis_store.config_set("stream-node-max-entries", 4)
    try:
        log = RunLog(redis_store, cid, "t" * 32, ttl_seconds=600, maxlen=8)
        log.append("run.queued", {"message": "trim the stream"})
        for _ in range(40):
            log.append("message.delta", {"text": "x"})
    finally:
        redis_store.config_set("stream-node-max-entries", 100)
    expect(
        api.http.get(api.stream_path(cid), params={"cursor": events[0]["id"]}),
        410,
        "cursor_trimmed",
    )


@pytest.mark.slow  # an app process of its own
def test_durable_backend_down_is_503_and_releases_the_lock(
    app_env: dict[str, str], redis_store: redis.Redis
) -> None:
    with running_devhost(app_env, "--durable-unavailable") as url:
        api = Api(url)
        first = api.start("Plan 1 day in Lisbon", **{"Idempotency-Key": "k-503"})
        assert first.status_code == 503
        assert first.json()["error"]["code"] == "durable_unavailable"
        retry = api.start("Plan 1 day in Lisbon", **{"Idempotency-Key": "k-503"})
        assert retry.status_code == 503  # a retry starts afresh rather than replaying the 503
    claim = redis_store.get("agent-idem:k-503")
    assert claim is not None
    cid = claim.split()[0]
    assert redis_store.hget(meta_key(cid), "active_run") is None
    types = [f["type"] for _, f in redis_store.xrange(stream_key(cid))]
    assert types == ["run.queued", "run.failed", "run.queued", "run.failed"]


@pytest.mark.slow  # waits out connection attempts to a Redis that is not there
def test_redis_down_is_503(app_env: dict[str, str]) -> None:
    from .redis_server import free_port

    env = {**app_env, "REDIS_CONNECTION_STRING": f"127.0.0.1:{free_port()}"}
    with running_devhost(env) as url:
        api = Api(url)
        health = api.http.get("/api/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        for response in (
            api.start("Plan 1 day in Lisbon"),
            api.http.get(api.stream_path("a" * 32)),
            api.http.get(f"{AGENT}/conversations/{'a' * 32}"),
        ):
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "redis_unavailable"


def test_health_reports_settings_without_secrets(api: Api) -> None:
    response = api.http.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["redis"] == "ok"
    assert body["settings"]["model"] == {
        "configured": True,
        "provider": "openai",
        "model": "scripted",
        "auth": "key",
    }
