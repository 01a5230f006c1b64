"""The app under the real Python worker library, driven the way the Functions host drives it.

``tests/worker_host`` is a minimal host: it starts a worker process (Python 3.13,
``azure-functions-runtime``) with the host's arguments, speaks the gRPC protocol to it, forwards
HTTP to the worker's own web server and stands in for the Durable extension's entity endpoint.
Real redis-server, scripted model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from agentstream.streamlog.keys import group_tag, notice_channel, stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import TERMINAL, Api, started, text_of
from .model_gate import HELD, ModelGate
from .standins import scripted_services
from .worker_host.harness import PYTHON_313, Harness, running_worker, worker_log
from .worker_host.host import WorkerInitFailed

pytestmark = [
    pytest.mark.slow,  # the worker harness
    pytest.mark.skipif(
        not PYTHON_313.exists(),
        reason="needs .venv313 (Python 3.13 with azure-functions-runtime and grpcio); `make test` "
        "creates it when pyenv or the system provides python3.13",
    ),
]

WORKER_THREADS = 2
DISCONNECT_BOUND_SECONDS = 5.0  # the bounded wait; the drop is expected well within a second


@pytest.fixture(scope="module")
def model_app() -> Any:
    return create_model_app(delay_seconds=0.003)


@pytest.fixture(scope="module")
def gate(model_app: Any) -> Iterator[ModelGate]:
    gate = ModelGate(model_app)
    yield gate
    gate.open()


@pytest.fixture(scope="module")
def app_env(redis_port: int, gate: ModelGate) -> Iterator[dict[str, str]]:
    with scripted_services(gate, redis_port) as services:
        yield {
            **services,
            "MODEL_TIMEOUT_SECONDS": "60",
            "MODEL_MAX_RETRIES": "0",
            # Also the XREAD BLOCK time: long, so a reader left blocked would stay visible.
            "STREAM_KEEPALIVE_SECONDS": "30",
            "DELTA_FLUSH_CHARS": "16",
            "PYTHON_THREADPOOL_THREAD_COUNT": str(WORKER_THREADS),
        }


@pytest.fixture(scope="module")
def harness(app_env: dict[str, str]) -> Iterator[Harness]:
    with worker_log() as log, running_worker(app_env, log) as harness:
        yield harness


@pytest.fixture(scope="module")
def base_url(harness: Harness) -> str:
    return harness.base_url


@pytest.fixture(autouse=True)
def model_held_until_the_test_opens_the_gate(gate: ModelGate) -> Iterator[None]:
    gate.close()
    yield
    gate.open()


def read_until(events: Iterator[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for event in events:
        seen.append(event)
        if event["type"] == event_type:
            return seen
    raise AssertionError(f"the stream ended before {event_type}: {[e['type'] for e in seen]}")


def sse_events(source: Any) -> Iterator[dict[str, Any]]:
    for sse in source.iter_sse():
        if sse.data:
            yield json.loads(sse.data)


def types_in_stream(client: redis.Redis, cid: str) -> list[str]:
    return [fields["type"] for _, fields in client.xrange(stream_key(cid))]


def hub_subscriptions(client: redis.Redis, cid: str) -> int:
    """Connections subscribed to the notices of the conversation's slot group: while a reader of
    it is live, the worker's hub is one; a hub whose group has no reader left unsubscribes, and
    so gets no notices and reads nothing more for it."""
    channel = notice_channel(group_tag(cid))
    return int(client.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1])


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # polling Redis's own view of its clients; no event to await
    return True


def test_the_worker_reports_streaming_and_indexes_every_function(harness: Harness) -> None:
    capabilities = harness.host.capabilities
    assert capabilities["HttpUri"].startswith("http://127.0.0.1:")
    assert capabilities["RequiresRouteParameters"] == "true"
    functions = harness.host.functions
    assert functions["stream"].trigger["route"] == "agents/{agent}/conversations/{cid}/stream"
    assert functions["start_conversation"].inputs_of_type("durableClient") == ["client"]
    assert functions["travelplanner"].trigger == {
        "direction": "IN",
        "type": "entityTrigger",
        "name": "context",
        "entityName": "travelplanner",
    }


def test_sse_arrives_chunk_by_chunk_through_the_worker(api: Api, gate: ModelGate) -> None:
    body = started(api.start(f"Plan 3 days in Lisbon {HELD}"))
    cid = body["conversation_id"]
    arrivals: list[tuple[float, dict[str, Any]]] = []
    opened_at = None
    with connect_sse(api.http, "GET", api.stream_path(cid)) as source:
        assert source.response.status_code == 200
        for event in sse_events(source):
            arrivals.append((time.monotonic(), event))
            if event["type"] == "run.started":
                # The model is held: the run cannot have ended, yet its first events are here.
                assert gate.wait_held(1) == 1
                opened_at = time.monotonic()
                gate.open()
            if event["type"] in TERMINAL:
                break
    events = [event for _, event in arrivals]
    assert [e["type"] for e in events[:2]] == ["run.queued", "run.started"]
    assert events[-1]["type"] == "run.completed"
    assert opened_at is not None and arrivals[0][0] < opened_at < arrivals[-1][0]
    assert len({at for at, _ in arrivals}) >= 3
    assert text_of(events).startswith("Here is your 3-day plan for Lisbon")
    assert [e["seq"] for e in events] == list(range(len(events)))


def test_resume_by_cursor_and_last_event_id_ndjson_and_text(api: Api) -> None:
    cid = started(api.start("Plan 2 days in Rome"))["conversation_id"]
    full = api.read_run(cid)
    assert full[-1]["type"] == "run.completed"
    first = api.read_sse(cid, cursor="0", limit=3)
    assert first == full[:3]
    assert api.read_sse(cid, cursor=first[-1]["id"]) == full[3:]
    assert api.read_sse(cid, cursor="0", last_event_id=first[-1]["id"]) == full[3:]

    response = api.http.get(
        api.stream_path(cid), params={"cursor": "0"}, headers={"Accept": "application/x-ndjson"}
    )
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in response.text.splitlines() if line] == full
    response = api.http.get(
        api.stream_path(cid), params={"cursor": "0"}, headers={"Accept": "text/plain"}
    )
    assert response.text == text_of(full) + "\n"


def test_a_follow_up_turn_sends_the_history(api: Api, gate: ModelGate, model_app: Any) -> None:
    cid = started(api.start("Plan 2 days in Paris"))["conversation_id"]
    first = api.read_run(cid)
    assert first[-1]["type"] == "run.completed"
    second = started(api.send(cid, "Make it 3 days"))
    events = api.read_run(cid, cursor=second["cursor"])
    assert events[-1]["type"] == "run.completed"
    assert 'Earlier you asked: "Plan 2 days in Paris"' in text_of(events)
    sent = model_app.state.scripted.requests[-1]["body"]["messages"]
    contents = [m.get("content") for m in sent if m["role"] in ("user", "assistant")]
    assert "Plan 2 days in Paris" in contents and text_of(first) in contents


def test_cancel_through_the_worker(api: Api, gate: ModelGate) -> None:
    body = started(api.start(f"Plan 4 days in Oslo {HELD}"))
    cid = body["conversation_id"]
    with connect_sse(api.http, "GET", api.stream_path(cid)) as source:
        events = sse_events(source)
        read_until(events, "run.started")
        assert gate.wait_held(1) == 1
        assert api.http.post(body["cancel_url"]).status_code == 202
        gate.open()
        rest = list(events)
    assert rest[-1]["type"] == "run.cancelled"
    assert "message.delta" not in [e["type"] for e in rest]


def test_more_conversations_than_worker_threads_all_complete(
    api: Api, gate: ModelGate, redis_store: redis.Redis
) -> None:
    count = WORKER_THREADS + 2
    cids = [
        started(api.start(f"Plan 2 days in Vienna, trip {n} {HELD}"))["conversation_id"]
        for n in range(count)
    ]
    # Each running agent holds a worker thread while the model is held; the rest must wait.
    assert gate.wait_held(WORKER_THREADS) == WORKER_THREADS
    running = [cid for cid in cids if "run.started" in types_in_stream(redis_store, cid)]
    assert len(running) == WORKER_THREADS
    waiting = [cid for cid in cids if cid not in running]
    assert all(types_in_stream(redis_store, cid) == ["run.queued"] for cid in waiting)
    gate.open()
    for cid in cids:
        events = api.read_run(cid)
        assert events[-1]["type"] == "run.completed", events[-1]
        assert text_of(events).startswith("Here is your 2-day plan for Vienna")


def test_a_client_that_disconnects_stops_the_workers_redis_reads(
    api: Api, gate: ModelGate, redis_store: redis.Redis
) -> None:
    cid = started(api.start(f"Plan 2 days in Prague {HELD}"))["conversation_id"]
    assert wait_for(lambda: hub_subscriptions(redis_store, cid) == 0, DISCONNECT_BOUND_SECONDS)
    with connect_sse(api.http, "GET", api.stream_path(cid)) as source:
        # Keep the iterator referenced: dropping it mid-stream closes the connection.
        events = sse_events(source)
        read_until(events, "run.started")
        # The run is held, so the worker's reader waits for the next notice of its group.
        assert wait_for(lambda: hub_subscriptions(redis_store, cid) == 1, 30)
        events.close()
    disconnected = time.monotonic()
    dropped = wait_for(lambda: hub_subscriptions(redis_store, cid) == 0, DISCONNECT_BOUND_SECONDS)
    took = time.monotonic() - disconnected
    print(f"group unsubscribed {took:.3f} s after the client disconnected")
    assert dropped, "the worker kept reading Redis for a client that had gone"
    gate.open()
    assert api.read_run(cid)[-1]["type"] == "run.completed"


def test_entity_batches_in_the_extensions_format(
    api: Api, gate: ModelGate, harness: Harness, redis_store: redis.Redis
) -> None:
    body = started(api.start(f"Plan 2 days in Madrid {HELD}"))
    cid = body["conversation_id"]
    assert gate.wait_held(1) == 1
    # While the first batch runs, two more signals queue up: one with no body (a null input,
    # what the SDK sends for a falsy input) and one with a malformed run input.
    signal = f"{harness.base_url}/durabletask/entities/travelplanner/{cid}"
    assert httpx.post(signal, params={"op": "run"}).status_code == 202
    malformed = json.dumps(json.dumps({"run_id": 5}))
    assert httpx.post(signal, params={"op": "run"}, content=malformed).status_code == 202
    gate.open()
    assert api.read_run(cid)[-1]["type"] == "run.completed"

    def batches() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return harness.batches.for_key(cid)

    assert wait_for(lambda: len(batches()) == 2, 30), batches()
    (first, first_reply), (second, second_reply) = batches()
    [run_op] = first["batch"]
    run_input = json.loads(json.loads(run_op["input"]))
    assert (run_input["run_id"], run_input["message"]) == (
        body["run_id"],
        f"Plan 2 days in Madrid {HELD}",
    )
    # What START wrote travels with the signal, for a failover that loses it (requeue.py).
    queued = [
        i for i, fields in redis_store.xrange(stream_key(cid)) if fields["type"] == "run.queued"
    ]
    assert [run_input["queued"]["id"]] == queued
    assert [op["input"] for op in second["batch"]] == [None, malformed]
    for op in first["batch"] + second["batch"]:
        assert op["isSignal"] is True and op["name"] == "run"
    ids = [op["id"] for op in first["batch"] + second["batch"]]
    assert len(set(ids)) == 3
    assert second["exists"] is True and second["state"] == first_reply["entityState"]
    assert len(second_reply["results"]) == 2
    null_result, malformed_result = second_reply["results"]
    print("null input ->", null_result, "; malformed input ->", malformed_result)
    assert null_result["isError"] or "malformed" in null_result["result"]
    assert "malformed" in malformed_result["result"]
    # The batch did not lose the first turn, and the conversation goes on.
    assert second_reply["entityExists"] is True
    assert len(json.loads(second_reply["entityState"])["history"]) >= 2
    follow_up = started(api.send(cid, "And a third day?"))
    assert api.read_run(cid, cursor=follow_up["cursor"])[-1]["type"] == "run.completed"


def test_a_bad_setting_fails_the_workers_init_naming_it(app_env: dict[str, str]) -> None:
    with (
        worker_log() as log,
        pytest.raises(WorkerInitFailed) as failure,
        running_worker({**app_env, "REDIS_STREAM_TTL_MINUTES": "soon"}, log),
    ):
        pass
    assert "REDIS_STREAM_TTL_MINUTES must be a whole number" in str(failure.value)


UNKNOWN_ID = "0" * 32


def test_what_no_route_takes_gets_the_apis_json_errors_and_every_route_still_works(
    api: Api,
) -> None:
    """The front door routes as the host does (by function name, a wrong method is no match):
    the catch-all answers only what no other function takes."""
    http = api.http
    conversation = f"/api/agents/travelplanner/conversations/{UNKNOWN_ID}"
    cases = [
        ("GET", "/api/nothing-here", 404, "not_found"),
        ("GET", "/api", 404, "not_found"),
        ("GET", "/api/health/", 404, "not_found"),
        ("DELETE", "/api/health", 405, "method_not_allowed"),
        ("PUT", "/api/agents/travelplanner/conversations", 405, "method_not_allowed"),
        ("PATCH", conversation, 405, "method_not_allowed"),
        ("GET", f"{conversation}/runs/{UNKNOWN_ID}/cancel", 405, "method_not_allowed"),
        ("POST", "/api/v1/models", 405, "method_not_allowed"),
    ]
    for method, path, status, code in cases:
        response = http.request(method, path)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == code, (method, path)
    assert http.put("/api/agents/travelplanner/conversations").json() == {
        "error": {
            "code": "method_not_allowed",
            "message": "PUT is not allowed on /api/agents/travelplanner/conversations; "
            "use GET, POST.",
        }
    }
    assert http.request("PATCH", conversation).headers["allow"] == "DELETE, GET"

    # Every route reaches its own function: an answer only that function gives.
    reached = [
        ("POST", "/api/agents/travelplanner/conversations", 400, "invalid_json"),
        ("GET", "/api/agents/travelplanner/conversations", 200, None),
        ("GET", conversation, 404, "conversation_not_found"),
        ("DELETE", conversation, 404, "conversation_not_found"),
        ("GET", f"{conversation}/stream", 404, "conversation_not_found"),
        ("GET", f"{conversation}/messages", 404, "conversation_not_found"),
        ("POST", f"{conversation}/messages", 400, "invalid_json"),
        ("POST", f"{conversation}/runs/{UNKNOWN_ID}/cancel", 404, "run_not_found"),
        ("GET", "/api/agents", 200, None),
        ("GET", "/api/agents/nobody/conversations", 404, "unknown_agent"),
        ("GET", "/api/health", 200, None),
        ("GET", "/api/ui", 200, None),
        ("GET", "/api/openapi.json", 200, None),
        ("POST", "/api/v1/responses", 400, None),
        ("GET", "/api/v1/responses/resp_unknown", 404, None),
        ("POST", "/api/v1/responses/resp_unknown/cancel", 404, None),
        ("GET", "/api/v1/models", 200, None),
    ]
    for method, path, status, code in reached:
        response = http.request(method, path, content=b"{")
        assert response.status_code == status, (method, path, response.text)
        if code is not None:
            assert response.json()["error"]["code"] == code, (method, path)
        if status == 404 and code is None:  # the OpenAI-shaped errors of /api/v1
            assert response.json()["error"]["code"] not in {"not_found", "method_not_allowed"}
