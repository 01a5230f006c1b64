"""OpenTelemetry through the development host with the SDK's in-memory exporters
(``--telemetry memory``): one trace per run, streams linked to it, metrics, redacted logs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agentstream.streamlog.keys import meta_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, Api
from .devhost_process import DevHostProcess, devhost_process
from .redis_server import free_port
from .standins import EVENTS_KEY, scripted_services

CANARY_KEY = "canary-openai-key-0123456789abcdef"
MESSAGE = "Plan 3 days in Lisbon"
RUNS_PER_MINUTE = 8  # more than this module starts from its own address


@pytest.fixture(scope="module")
def host(redis_port: int) -> Iterator[DevHostProcess]:
    with scripted_services(create_model_app(delay_seconds=0.001), redis_port) as services:
        env = {
            **services,
            "OPENAI_API_KEY": CANARY_KEY,  # the scripted model ignores it; logs must not show it
            "LIMIT_RUNS_PER_MINUTE": str(RUNS_PER_MINUTE),
            "DELTA_FLUSH_CHARS": "16",
        }
        with devhost_process(env, free_port(), "--telemetry", "memory") as process:
            yield process


@pytest.fixture(scope="module")
def base_url(host: DevHostProcess) -> str:
    return host.base_url


def recorded(api: Api) -> dict[str, Any]:
    response = api.http.get("/devhost/telemetry")
    assert response.status_code == 200
    return response.json()


def spans_of(api: Api, trace_id: str, until: str) -> list[dict[str, Any]]:
    """The trace's spans, once a span named ``until`` has ended in it (the entity's run span
    ends on its own thread, just after the client saw the terminal event)."""
    deadline = time.monotonic() + 20
    while True:
        spans = [s for s in recorded(api)["spans"] if s["trace_id"] == trace_id]
        if any(s["name"] == until for s in spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)  # the in-memory exporter has nothing to wait on


def post_span(api: Api, conversation_id: str) -> dict[str, Any]:
    for span in recorded(api)["spans"]:
        if (
            span["name"] == "POST /api/agents/{agent}/conversations"
            and span["attributes"].get("agentstream.conversation_id") == conversation_id
        ):
            return span
    raise AssertionError("no span for the POST")


def descends_from(span: dict[str, Any], ancestor: dict[str, Any], by_id: dict[str, Any]) -> bool:
    while span["parent_id"] is not None:
        if span["parent_id"] == ancestor["span_id"]:
            return True
        span = by_id.get(span["parent_id"], {"parent_id": None})
    return False


def test_one_run_is_one_trace_from_post_to_terminal_event(api: Api) -> None:
    body = api.start(MESSAGE).json()
    cid, run_id = body["conversation_id"], body["run_id"]
    events = api.read_run(cid)
    assert events[-1]["type"] == "run.completed"
    post = post_span(api, cid)
    spans = spans_of(api, post["trace_id"], "run travelplanner")
    by_id = {s["span_id"]: s for s in spans}
    assert post["parent_id"] is None and post["kind"] == "SERVER"
    assert post["attributes"]["agentstream.run_id"] == run_id
    [run] = [s for s in spans if s["name"] == "run travelplanner"]
    assert run["parent_id"] == post["span_id"]
    assert run["attributes"]["agentstream.conversation_id"] == cid
    assert run["attributes"]["agentstream.run_id"] == run_id
    assert run["attributes"]["agentstream.run.status"] == "completed"
    assert [e["name"] for e in run["events"]] == ["run.completed"]
    # The model calls (openai instrumentation) and tool calls are under the run.
    # (the openai instrumentation names them "chat <model>", the GenAI convention)
    model_calls = [s for s in spans if s["name"] == "chat scripted"]
    tools = [s for s in spans if s["name"].startswith("execute_tool ")]
    assert len(model_calls) >= 2 and len(tools) >= 2
    assert all(descends_from(s, run, by_id) for s in model_calls + tools)
    # Tool HTTP calls (httpx instrumentation) sit under their tool span; the POST's Redis
    # commands under it, and the run's stream writes (redis instrumentation) under the run.
    # (openai releases that send through httpx add their own HTTP spans, under the model call)
    http_calls = [
        s
        for s in spans
        if s["scope"] == "opentelemetry.instrumentation.httpx"
        and not any(descends_from(s, m, by_id) for m in model_calls)
    ]
    assert http_calls and all(any(descends_from(h, t, by_id) for t in tools) for h in http_calls)
    commands = [s for s in spans if s["scope"] == "opentelemetry.instrumentation.redis"]
    assert all(descends_from(c, post, by_id) for c in commands)
    assert sum(descends_from(c, run, by_id) for c in commands) >= len(events) // 2
    # No message text, tool arguments or keys in any attribute.
    text = json.dumps([s["attributes"] for s in spans] + [s["events"] for s in spans])
    for secret in ("Lisbon", EVENTS_KEY, CANARY_KEY):
        assert secret not in text, secret


def test_a_resumed_stream_is_a_span_linked_to_its_run(api: Api) -> None:
    body = api.start(MESSAGE).json()
    cid = body["conversation_id"]
    first = api.read_sse(cid, limit=3)
    rest = api.read_run(cid, cursor=first[-1]["id"])
    assert rest[-1]["type"] == "run.completed"
    post = post_span(api, cid)
    deadline = time.monotonic() + 20
    while True:
        streams = [
            s
            for s in recorded(api)["spans"]
            if s["name"] == "stream" and s["attributes"].get("agentstream.conversation_id") == cid
        ]
        if len(streams) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # the response's span ends as its body ends, after the client has it
    assert len(streams) == 2
    for stream in streams:
        assert stream["links"] == [{"trace_id": post["trace_id"], "span_id": post["span_id"]}]
        assert stream["attributes"]["agentstream.run_id"] == body["run_id"]
    ends = sorted(s["attributes"]["agentstream.stream.end"] for s in streams)
    assert ends == ["disconnected", "terminal"]
    resumed = next(s for s in streams if s["attributes"]["agentstream.stream.end"] == "terminal")
    assert resumed["attributes"]["agentstream.stream.events"] == len(rest)
    assert resumed["attributes"]["agentstream.stream.bytes"] > 0


def test_the_metrics_are_recorded(api: Api, host: DevHostProcess) -> None:
    cid = api.start(MESSAGE).json()["conversation_id"]
    assert api.read_run(cid)[-1]["type"] == "run.completed"
    # One caller over the runs-per-minute limit.
    over = {"X-Forwarded-For": "2001:db8::77"}
    statuses = [api.start(MESSAGE, **over).status_code for _ in range(RUNS_PER_MINUTE + 1)]
    assert statuses == [202] * RUNS_PER_MINUTE + [429]
    metrics = recorded(api)["metrics"]
    ended = metrics["agentstream.runs.ended"]
    assert any(
        p["attributes"]
        == {"agentstream.agent": "travelplanner", "agentstream.run.status": "completed"}
        and p["value"] >= 1
        for p in ended
    )
    assert metrics["agentstream.runs.started"][0]["value"] >= 1
    for histogram in (
        "agentstream.run.duration",
        "agentstream.run.time_to_first_token",
        "agentstream.stream.token_latency",
        "agentstream.writer.flush_size",
    ):
        assert metrics[histogram][0]["value"]["count"] >= 1, histogram
    assert "agentstream.streams.active" in metrics
    assert "agentstream.hub.connections" in metrics
    assert metrics["agentstream.limit.rejections"] == [
        {"attributes": {"agentstream.limit": "runs_per_minute"}, "value": 1}
    ]


def test_one_log_line_per_request_and_per_run_end(api: Api, host: DevHostProcess) -> None:
    body = api.start(MESSAGE).json()
    cid, run_id = body["conversation_id"], body["run_id"]
    assert api.read_run(cid)[-1]["type"] == "run.completed"
    deadline = time.monotonic() + 20
    while f"run ended agent=travelplanner conversation={cid}" not in host.log_text():
        assert time.monotonic() < deadline, "no run-end line"
        time.sleep(0.05)  # the line is written by the entity's thread after the terminal event
    lines = host.log_text().splitlines()
    posts = [line for line in lines if "request method=POST" in line and cid in line]
    assert len(posts) == 1
    assert "route=/api/agents/{agent}/conversations status=202" in posts[0]
    assert f"run={run_id}" in posts[0] and "duration_ms=" in posts[0]
    streams = [line for line in lines if "request method=GET" in line and cid in line]
    stream_route = "route=/api/agents/{agent}/conversations/{cid}/stream"
    assert streams and all(stream_route in line for line in streams)
    [ended] = [line for line in lines if "run ended" in line and cid in line]
    assert f"run={run_id} status=completed code=- attempt=1" in ended


def test_a_request_no_route_takes_is_logged_by_its_template(api: Api, host: DevHostProcess) -> None:
    assert api.http.put("/api/agents/travelplanner/conversations").status_code == 405
    assert api.http.get(f"/api/{CANARY_KEY}/nothing").status_code == 404
    lines = host.log_text().splitlines()
    assert any("request method=PUT route=/api/{path} status=405" in line for line in lines)
    assert any("request method=GET route=/api/{path} status=404" in line for line in lines)
    assert CANARY_KEY not in host.log_text()  # the path sent is not written out


def test_an_internal_error_is_logged_with_its_traceback_redacted(
    api: Api, host: DevHostProcess, redis_port: int
) -> None:
    cid = api.start(MESSAGE).json()["conversation_id"]
    api.read_run(cid)
    # A record the code cannot read (as a bug would leave), carrying secrets in its text.
    poison = f"{CANARY_KEY} password=hunter2-canary"
    admin = redis.Redis(port=redis_port, decode_responses=True)
    try:
        run = "e" * 32
        admin.hset(meta_key(cid), mapping={f"status:{run}": "queued", f"created:{run}": poison})
    finally:
        admin.close()
    response = api.http.get(f"{AGENT}/conversations/{cid}")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert CANARY_KEY not in response.text
    log = host.log_text()
    assert "status failed" in log and "Traceback (most recent call last)" in log
    assert "ValueError" in log and "[REDACTED]" in log
    assert CANARY_KEY not in log and "hunter2-canary" not in log


def test_azure_monitor_authenticates_as_the_identity_infra_names() -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    from agentstream.telemetry.setup import _azure_monitor_credential

    deployed = {"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=abc-123;Authorization=AAD"}
    assert isinstance(_azure_monitor_credential(deployed), ManagedIdentityCredential)
    any_identity = {"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD"}
    assert isinstance(_azure_monitor_credential(any_identity), DefaultAzureCredential)
    assert _azure_monitor_credential({}) is None
