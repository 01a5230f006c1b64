"""The OpenAPI document, response by response: every status it declares for every operation is
produced by the running app and its body checked against the declared schema.

The response schemas are closed (``additionalProperties: false``), so a field a handler adds or
drops fails here until the document says so. Development hosts share one Redis: the usual one;
one with per-caller limits; one whose Durable backend is down, behind App Service
Authentication; and one whose Redis is gone. A ``500`` is a real fault the app does not expect:
a key of the app's that holds another type (something else sharing the Redis wrote it), so
Redis answers ``WRONGTYPE``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from agentstream.api.errors import error_response
from agentstream.streamlog import owners
from agentstream.streamlog.keys import meta_key, stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, Api
from .devhost_process import running_devhost
from .redis_server import free_port
from .standins import scripted_services
from .test_openapi import DOCUMENT, Conformance, _called, _python_files

CONVERSATIONS = "/api/agents/{agent}/conversations"
CONVERSATION = CONVERSATIONS + "/{cid}"
MESSAGES = CONVERSATION + "/messages"
STREAM = CONVERSATION + "/stream"
CANCEL = CONVERSATION + "/runs/{run_id}/cancel"
AGENTS = "/api/agents"
# The OpenAI-compatible surface has its own error shape and its own check against the document
# (tests/test_responses_api.py); this file holds the API's own routes to it.
OWN_ROUTES = "/api/v1/"

# Declared, but no plain request makes the app send them; each says how it is held to the document.
NOT_PRODUCIBLE = {
    ("GET", AGENTS, 503): (
        "the listing reads no Redis: only auth_unavailable, when Entra ID's signing keys cannot "
        "be fetched"
    ),
    ("GET", AGENTS, 500): (
        "the listing reads no Redis and calls nothing that can fail but the app's own code; its "
        "body is error_response's, checked below"
    ),
    ("POST", "/api/agents/{agent}/conversations", 409): (
        "a retried Idempotency-Key whose run record was dropped (after 50 newer runs) while "
        "another run is active; the body is the same run_active error as POST .../messages"
    ),
}
PRINCIPAL = {"X-MS-CLIENT-PRINCIPAL-ID": "0c1d2e3f-tester"}
LISTER_ID = "0c1d2e3f-lister"  # a caller whose listing is poisoned (the 500s below)
AGENT_NAME = AGENT.rsplit("/", 1)[-1]
UNKNOWN = "0" * 32
WRONGTYPE_KEY = "conformance-wrongtype-5f1e"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def hosts(redis_port: int) -> Iterator[dict[str, str]]:
    model = create_model_app(delay_seconds=0.002)
    with scripted_services(model, redis_port) as env:
        degraded = {**env, "AUTH_MODE": "easyauth", "WEBSITE_AUTH_ENABLED": "true"}
        # REDIS_CLUSTER=false: no topology probe of the missing Redis.
        no_redis = {
            **env,
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{free_port()}",
            "REDIS_CLUSTER": "false",
        }
        limited = {**env, "LIMIT_RUNS_PER_MINUTE": "1", "LIMIT_OPEN_STREAMS": "1"}
        with (
            running_devhost(env) as usual,
            running_devhost(limited) as limits,
            running_devhost(degraded, "--durable-unavailable") as durable_down,
            running_devhost(no_redis) as redis_down,
        ):
            yield {
                "usual": usual,
                "limits": limits,
                "durable_down": durable_down,
                "redis_down": redis_down,
            }


class Coverage(Conformance):
    """Checks each response against the document and remembers which were seen."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__(document)
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, route: str, response: httpx.Response, status: int) -> None:
        assert response.status_code == status, (method, route, response.text)
        self.response(method, route, response)
        self.seen.add((method, route, status))

    def declared(self) -> set[tuple[str, str, int]]:
        return {
            (method.upper(), route, int(status))
            for route, item in self.document["paths"].items()
            if not route.startswith(OWN_ROUTES)
            for method, operation in item.items()
            if method != "parameters"
            for status in operation["responses"]
        }


def _urls(cid: str, run_id: str = UNKNOWN) -> dict[str, str]:
    base = f"{AGENT}/conversations/{cid}"
    return {
        "conversation": base,
        "messages": f"{base}/messages",
        "stream": f"{base}/stream",
        "cancel": f"{base}/runs/{run_id}/cancel",
    }


def test_every_declared_response_is_produced_and_matches(
    document: dict[str, Any], hosts: dict[str, str], redis_port: int
) -> None:
    check = Coverage(document)
    api = Api(hosts["usual"])
    http = api.http

    # A finished run, and what can be asked of it.
    first = api.start("Plan 2 days in Lisbon")
    check("POST", CONVERSATIONS, first, 202)
    cid, done_run = first.json()["conversation_id"], first.json()["run_id"]
    events = api.read_run(cid)
    url = _urls(cid, done_run)
    for accept in ("text/event-stream", "application/x-ndjson", "text/plain"):
        check(
            "GET",
            STREAM,
            http.get(url["stream"], params={"cursor": "0"}, headers={"Accept": accept}),
            200,
        )
    check("GET", STREAM, http.get(url["stream"], params={"cursor": events[-1]["id"]}), 204)
    check("GET", STREAM, http.get(url["stream"], headers={"Accept": "application/json"}), 406)
    check("GET", STREAM, http.get(url["stream"], params={"cursor": "yesterday"}), 400)
    check("GET", STREAM, http.get(url["stream"], params={"cursor": "9999999999999-0"}), 400)
    check("GET", CONVERSATION, http.get(url["conversation"]), 200)
    check("GET", MESSAGES, http.get(url["messages"]), 200)
    check("GET", MESSAGES, http.get(url["messages"], params={"limit": 0}), 400)
    check("GET", AGENTS, http.get(AGENTS), 200)
    check("POST", CANCEL, http.post(url["cancel"]), 409)
    check("GET", CONVERSATIONS, http.get(f"{AGENT}/conversations"), 200)
    check("GET", CONVERSATIONS, http.get(f"{AGENT}/conversations", params={"limit": 0}), 400)

    # A run that is still going: 409 for a second message, 202 for its cancel.
    key = {"Idempotency-Key": "conformance-key"}
    slow = api.start("Plan 5 days in Lisbon [[slow]]", **key)
    check("POST", CONVERSATIONS, slow, 202)
    slow_cid, slow_run = slow.json()["conversation_id"], slow.json()["run_id"]
    slow_url = _urls(slow_cid, slow_run)
    check("POST", MESSAGES, api.send(slow_cid, "And then?"), 409)
    check("POST", CANCEL, http.post(slow_url["cancel"]), 202)
    assert api.read_run(slow_cid, cursor=slow.json()["cursor"])[-1]["type"] == "run.cancelled"
    check("POST", MESSAGES, api.send(slow_cid, "Plan 1 day in Porto"), 202)
    api.read_run(slow_cid)
    check("DELETE", CONVERSATION, http.delete(slow_url["conversation"]), 204)
    for method, route, path in (
        ("GET", CONVERSATION, slow_url["conversation"]),
        ("GET", MESSAGES, slow_url["messages"]),
        ("DELETE", CONVERSATION, slow_url["conversation"]),
        ("GET", STREAM, slow_url["stream"]),
        ("POST", MESSAGES, slow_url["messages"]),
        ("POST", CANCEL, slow_url["cancel"]),
    ):
        check(method, route, http.request(method, path, json={"message": "hi"}), 404)

    # Events no longer kept: the stream trimmed by Redis, as its MAXLEN does.
    with redis.Redis(port=redis_port) as store:
        store.xtrim(stream_key(cid), maxlen=2, approximate=False)
    check("GET", STREAM, http.get(url["stream"], params={"cursor": first.json()["cursor"]}), 410)

    # A key of the app's holding another type: Redis answers WRONGTYPE, which the app does not
    # expect, so every operation that reads the key fails with its documented 500.
    wrong = api.start("Plan 1 day in Evora", **{"Idempotency-Key": WRONGTYPE_KEY})
    check("POST", CONVERSATIONS, wrong, 202)
    wrong_cid, wrong_run = wrong.json()["conversation_id"], wrong.json()["run_id"]
    api.read_run(wrong_cid)
    wrong_url = _urls(wrong_cid, wrong_run)
    with redis.Redis(port=redis_port) as store:
        (claim,) = store.scan_iter(match=f"*{WRONGTYPE_KEY}")  # a string: now a hash
        store.delete(claim)
        store.hset(claim, "written by", "someone else")
        store.expire(claim, 600)
        listed = owners.index_key(AGENT_NAME, "easyauth:" + LISTER_ID)  # that caller's own
        for poisoned in (meta_key(wrong_cid), listed):
            store.delete(poisoned)  # a hash, and a sorted set: now strings
            store.set(poisoned, "someone else's", ex=600)
    check(
        "POST",
        CONVERSATIONS,
        api.start("Plan 1 day in Evora", **{"Idempotency-Key": WRONGTYPE_KEY}),
        500,
    )
    for method, route, path in (
        ("GET", CONVERSATION, wrong_url["conversation"]),
        ("GET", STREAM, wrong_url["stream"]),
        ("GET", MESSAGES, wrong_url["messages"]),
        ("POST", MESSAGES, wrong_url["messages"]),
        ("POST", CANCEL, wrong_url["cancel"]),
        ("DELETE", CONVERSATION, wrong_url["conversation"]),
    ):
        check(method, route, http.request(method, path, json={"message": "hi"}), 500)
    # The listing is the caller's own: one of its own, on the host that knows callers.
    listing = httpx.get(
        hosts["durable_down"] + f"{AGENT}/conversations",
        headers={"X-MS-CLIENT-PRINCIPAL-ID": LISTER_ID},
        timeout=30,
    )
    check("GET", CONVERSATIONS, listing, 500)

    # Malformed requests, on every operation that takes them.
    bad = _urls("not-an-id", "not-a-run")
    for method, route, path in (
        ("GET", CONVERSATION, bad["conversation"]),
        ("DELETE", CONVERSATION, bad["conversation"]),
        ("GET", STREAM, bad["stream"]),
        ("POST", MESSAGES, bad["messages"]),
        ("POST", CANCEL, url["cancel"].replace(done_run, "not-a-run")),
    ):
        check(method, route, http.request(method, path, json={"message": "hi"}), 400)
    for route, path in ((CONVERSATIONS, f"{AGENT}/conversations"), (MESSAGES, url["messages"])):
        check("POST", route, http.post(path, content=b"{"), 400)
        check(
            "POST",
            route,
            http.post(path, content=b"<m/>", headers={"Content-Type": "application/xml"}),
            415,
        )
        check(
            "POST",
            route,
            http.post(path, content=b"x" * 70_000, headers={"Content-Type": "text/plain"}),
            413,
        )
    # An Idempotency-Key reused with another message: of a new conversation, of a next message.
    check("POST", CONVERSATIONS, api.start("Something else", **key), 422)
    reused = {"Idempotency-Key": "conformance-message"}
    check("POST", MESSAGES, api.send(cid, "Plan 1 day in Faro", **reused), 202)
    api.read_run(cid)
    check("POST", MESSAGES, api.send(cid, "Plan 1 day in Braga", **reused), 422)

    # An agent that does not exist, on every operation.
    nobody = "/api/agents/nobody/conversations"
    for method, route, path in (
        ("GET", CONVERSATIONS, nobody),
        ("POST", CONVERSATIONS, nobody),
        ("GET", CONVERSATION, f"{nobody}/{cid}"),
        ("GET", MESSAGES, f"{nobody}/{cid}/messages"),
        ("DELETE", CONVERSATION, f"{nobody}/{cid}"),
        ("GET", STREAM, f"{nobody}/{cid}/stream"),
        ("POST", MESSAGES, f"{nobody}/{cid}/messages"),
        ("POST", CANCEL, f"{nobody}/{cid}/runs/{done_run}/cancel"),
    ):
        check(method, route, http.request(method, path, json={"message": "hi"}), 404)

    for route in ("/api/health", "/api/ui", "/api/openapi.json"):
        check("GET", route, http.get(route), 200)

    # Behind App Service Authentication, without a principal: 401; with one, the Durable
    # backend being down is a 503.
    degraded = httpx.Client(base_url=hosts["durable_down"], timeout=30)
    every_operation = (
        ("GET", AGENTS, AGENTS),
        ("GET", MESSAGES, url["messages"]),
        ("GET", CONVERSATIONS, f"{AGENT}/conversations"),
        ("POST", CONVERSATIONS, f"{AGENT}/conversations"),
        ("GET", CONVERSATION, url["conversation"]),
        ("DELETE", CONVERSATION, url["conversation"]),
        ("GET", STREAM, url["stream"]),
        ("POST", MESSAGES, url["messages"]),
        ("POST", CANCEL, url["cancel"]),
    )
    for method, route, path in every_operation:
        check(method, route, degraded.request(method, path, json={"message": "hi"}), 401)
    refused = degraded.post(f"{AGENT}/conversations", json={"message": "hi"}, headers=PRINCIPAL)
    check("POST", CONVERSATIONS, refused, 503)

    # Over the caller's limits: one run a minute, one open stream. The caller (the last
    # X-Forwarded-For hop in key mode) is one of its own: other tests on this Redis count theirs.
    limited = Api(hosts["limits"])
    limited.http.headers["X-Forwarded-For"] = "203.0.113.77"  # a documentation address
    running = limited.start("Plan 5 days in Oslo [[slow]]")
    check("POST", CONVERSATIONS, running, 202)
    check("POST", CONVERSATIONS, limited.start("Plan 1 day in Bergen"), 429)
    running_cid = running.json()["conversation_id"]
    check("POST", MESSAGES, limited.send(running_cid, "And then?"), 429)
    with limited.http.stream("GET", limited.stream_path(running_cid)) as first_reader:
        assert first_reader.status_code == 200
        check("GET", STREAM, limited.http.get(limited.stream_path(running_cid)), 429)

    # Redis gone: 503 from every operation, and an unhealthy health check.
    gone = httpx.Client(base_url=hosts["redis_down"], timeout=60)
    for method, route, path in every_operation[1:]:  # not GET /api/agents: it reads no Redis
        check(method, route, gone.request(method, path, json={"message": "hi"}), 503)
    check("GET", "/api/health", gone.get("/api/health"), 503)

    assert check.declared() - check.seen == set(NOT_PRODUCIBLE)


def test_the_500_no_request_produces_matches_the_document(document: dict[str, Any]) -> None:
    check = Conformance(document)
    body = error_response(500, "internal_error", "Something went wrong on our side.").body
    for method, route, status in NOT_PRODUCIBLE:
        if status == 500:
            operation = document["paths"][route][method.lower()]
            schema = operation["responses"]["500"]["content"]["application/json"]["schema"]
            check.validator(schema).validate(json.loads(body))


def test_the_development_hosts_own_answers_are_the_apis_json_errors(
    document: dict[str, Any], hosts: dict[str, str]
) -> None:
    error = Conformance(document).validator({"$ref": "#/components/schemas/Error"})
    http = httpx.Client(base_url=hosts["usual"], timeout=30)
    for method, path, status, code in (
        ("GET", "/api/nothing-here", 404, "not_found"),
        ("GET", "/", 404, "not_found"),
        ("GET", "/api/health/", 404, "not_found"),  # no redirect to /api/health
        ("POST", f"{AGENT}/conversations/", 404, "not_found"),
        ("DELETE", "/api/health", 405, "method_not_allowed"),
        ("PUT", f"{AGENT}/conversations", 405, "method_not_allowed"),
    ):
        response = http.request(method, path)
        assert response.status_code == status, (method, path)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        error.validate(body)
        assert body["error"]["code"] == code
        assert body["error"]["message"].endswith(".") and body["error"]["message"][0].isupper()
    allowed = http.put(f"{AGENT}/conversations").headers["allow"]
    assert set(allowed.split(", ")) == {"GET", "POST"}


def _message_ends(node: ast.AST) -> tuple[str, str] | None:
    """The first and last characters of a literal or f-string message; None for others."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value[:1], node.value[-1:]
    if isinstance(node, ast.JoinedStr):
        first, last = node.values[0], node.values[-1]
        head = first.value[:1] if isinstance(first, ast.Constant) else "{"
        tail = last.value[-1:] if isinstance(last, ast.Constant) else "}"
        return head, tail
    return None


def test_every_error_message_is_a_sentence() -> None:
    """One style for every message a client can get: a capital letter first, a full stop last."""
    messages = 0
    for path, tree in _python_files():
        if "responses" in path.parts:
            continue  # the OpenAI-compatible surface words its errors as OpenAI does
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called(node) in {"ApiError", "error_response"}:
                keywords = {k.arg: k.value for k in node.keywords}
                message = node.args[2] if len(node.args) > 2 else keywords.get("message")
                ends = _message_ends(message) if message is not None else None
                if ends is None:
                    continue  # passed on (the ApiError handler) or the config error's text
                messages += 1
                # A message may start with a sentence passed in ("{what} Please try again.").
                assert ends[0] == "{" or ends[0].isupper(), (path.name, ast.unparse(message))
                assert ends[1] == ".", (path.name, ast.unparse(message))
    assert messages > 20
