"""Conversations that outlive their stream, DELETE, and bad input at the door (over real HTTP)."""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis

from agentstream.streamlog.keys import conversation_key, meta_key, stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, Api, started, text_of
from .devhost_process import running_devhost
from .standins import scripted_services


@pytest.fixture(scope="module")
def model_app() -> Any:
    return create_model_app()


@pytest.fixture(scope="module")
def base_url(redis_port: int, model_app: Any) -> Iterator[str]:
    with (
        scripted_services(model_app, redis_port) as services,
        running_devhost({**services, "STREAM_KEEPALIVE_SECONDS": "1"}) as url,
    ):
        yield url


def expect_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)  # another process changes this state; there is no event to await


def test_a_follow_up_after_the_stream_expired_continues_the_conversation(
    api: Api, redis_store: redis.Redis, model_app: Any
) -> None:
    cid = started(api.start("Plan 2 days in Lisbon"))["conversation_id"]
    first = api.read_run(cid)
    assert first[-1]["type"] == "run.completed"

    # The stream and its meta hash expire by TTL; the conversation record lives on.
    redis_store.pexpire(stream_key(cid), 1)
    redis_store.pexpire(meta_key(cid), 1)
    wait_until(lambda: redis_store.exists(stream_key(cid), meta_key(cid)) == 0, "keys must expire")
    assert redis_store.exists(conversation_key(cid)) == 1

    status = api.http.get(f"{AGENT}/conversations/{cid}")
    assert status.status_code == 200
    assert status.json()["runs"] == [] and status.json()["last_event"] is None
    assert status.json()["conversation_expires_in_seconds"] > 86_400
    assert api.http.get(api.stream_path(cid)).status_code == 204

    follow_up = started(api.send(cid, "What about something cheaper?"))
    events = api.read_run(cid)
    assert events[0]["run"] == follow_up["run_id"] and events[-1]["type"] == "run.completed"
    last_request = model_app.state.scripted.requests[-1]
    contents = [m.get("content") or "" for m in last_request["body"]["messages"]]
    assert "Plan 2 days in Lisbon" in contents, "the model must see the earlier turn"
    assert text_of(first).strip() in contents


def test_delete_removes_everything_and_every_route_answers_404(
    api: Api, redis_store: redis.Redis, base_url: str
) -> None:
    body = started(api.start("Plan 2 days in Lisbon"))
    cid = body["conversation_id"]
    api.read_run(cid)
    entity_url = f"{base_url}/runtime/webhooks/durabletask/entities/travelplanner/{cid}"
    assert httpx.get(entity_url).status_code == 200

    second = started(api.send(cid, "Plan 7 days in Rome [[slow]]"))
    reader = api.http.build_request(
        "GET", api.stream_path(cid), params={"cursor": second["cursor"]}
    )
    response = api.http.send(reader, stream=True)
    deleted = api.http.delete(f"{AGENT}/conversations/{cid}")
    assert deleted.status_code == 204
    live = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    response.close()
    assert live[-1]["type"] == "run.cancelled", "a live reader must see the run end"

    base = f"{AGENT}/conversations/{cid}"
    expect_error(api.http.get(base), 404, "conversation_not_found")
    expect_error(api.http.get(f"{base}/stream"), 404, "conversation_not_found")
    expect_error(api.send(cid, "hello again"), 404, "conversation_not_found")
    expect_error(api.http.post(f"{base}/runs/{second['run_id']}/cancel"), 404, "run_not_found")
    expect_error(api.http.delete(base), 404, "conversation_not_found")
    assert redis_store.exists(stream_key(cid), meta_key(cid), conversation_key(cid)) == 0
    wait_until(lambda: httpx.get(entity_url).status_code == 404, "the entity must be deleted")


def test_an_idempotency_key_is_bound_to_its_message(api: Api) -> None:
    key = {"Idempotency-Key": "order-7"}
    first = started(api.start("Plan 2 days in Lisbon", **key))
    again = started(api.start("Plan 2 days in Lisbon", **key))
    assert again["conversation_id"] == first["conversation_id"]
    assert again["run_id"] == first["run_id"]
    expect_error(api.start("Something else entirely", **key), 422, "idempotency_key_reused")
    api.read_run(first["conversation_id"])

    cid = first["conversation_id"]
    follow = started(api.send(cid, "And a third day?", **{"Idempotency-Key": "f-1"}))
    assert (
        started(api.send(cid, "And a third day?", **{"Idempotency-Key": "f-1"}))["run_id"]
        == (follow["run_id"])
    )
    expect_error(
        api.send(cid, "A different ask", **{"Idempotency-Key": "f-1"}),
        422,
        ("idempotency_key_reused"),
    )
    api.read_run(cid)


def test_each_bad_input_gets_its_4xx(api: Api) -> None:
    start = f"{AGENT}/conversations"
    nested = '{"message": ' + "[" * 30_000 + "]" * 30_000 + "}"
    expect_error(
        api.http.post(start, content=nested, headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )
    surrogate = b'{"message": "\\ud800 lone"}'
    expect_error(
        api.http.post(start, content=surrogate, headers={"Content-Type": "application/json"}),
        400,
        "invalid_message",
    )
    cid = started(api.start("Plan 1 day in Lisbon"))["conversation_id"]
    events = api.read_run(cid)
    expect_error(api.http.get(f"{AGENT}/conversations/{cid}%0A"), 400, "invalid_conversation_id")
    expect_error(
        api.http.post(f"{AGENT}/conversations/{cid}/runs/{events[0]['run']}%0A/cancel"),
        400,
        "invalid_run_id",
    )
    expect_error(
        api.http.get(api.stream_path(cid), params={"cursor": events[-1]["id"] + "\n"}),
        400,
        "invalid_cursor",
    )


# --- 10,000 malformed requests ----------------------------------------------------------------

_JUNK = string.printable + "\u00e9\u2028\ud7ff\U0001f600"


def _junk(rng: random.Random, longest: int = 40) -> str:
    return "".join(rng.choice(_JUNK) for _ in range(rng.randint(0, longest)))


def _malformed_request(rng: random.Random, cid: str) -> dict[str, Any]:
    """One request that is wrong in at least one way a client can get wrong."""
    raw_id = rng.choice([_junk(rng), cid.upper(), cid + "\n", cid[:-1], "\x00" + cid, "../" + cid])
    bad_id = quote(raw_id, safe="")
    path = rng.choice(
        [
            f"{AGENT}/conversations",
            f"{AGENT}/conversations/{bad_id}",
            f"{AGENT}/conversations/{bad_id}/messages",
            f"{AGENT}/conversations/{bad_id}/stream",
            f"{AGENT}/conversations/{cid}/runs/{bad_id}/cancel",
            f"/api/agents/{quote(_junk(rng, 10), safe='')}/conversations",
            f"{AGENT}/conversations/{cid}/stream",
        ]
    )
    body_kind = rng.randrange(8)
    bodies = [
        lambda: "{" * rng.randint(1, 50_000),
        lambda: '{"message": ' + json.dumps(rng.choice([1, None, [], {}, True])) + "}",
        lambda: '{"message": "\\ud8' + rng.choice("0123456789abcdef") + '0"}',
        lambda: '{"message": "' + _junk(rng) + "",
        lambda: json.dumps({"msg": _junk(rng)}),
        lambda: json.dumps({"message": " " * rng.randint(0, 5)}),
        lambda: "[" * rng.randint(1000, 60_000),
        lambda: _junk(rng, 200),
    ]
    headers = {
        "Content-Type": rng.choice(
            ["application/json", "text/plain", "application/xml", _junk(rng, 20), ""]
        ),
        "Accept": rng.choice(["text/event-stream", "image/png", _junk(rng, 20), "*/*;q=x"]),
        "Last-Event-ID": rng.choice(["", "99999999999999999999999-1", _junk(rng, 25)]),
        "Idempotency-Key": rng.choice(["k\u00e9y", "a" * 300, _junk(rng, 10), "ok-key"]),
    }
    headers = {
        k: v
        for k, v in headers.items()
        if rng.random() < 0.5 and v.isascii() and v.isprintable() and v == v.strip()
    }
    method = rng.choice(["GET", "POST", "POST", "DELETE", "PUT"])
    cursor = rng.choice(["", "-1", "1-", "1-1-1", _junk(rng, 12), "0-99999999999999999999999"])
    return {
        "method": method,
        "url": path,
        "content": bodies[body_kind]().encode("utf-8", "surrogatepass"),
        "headers": headers,
        "params": {"cursor": cursor} if rng.random() < 0.5 else {},
    }


@pytest.mark.slow
def test_ten_thousand_malformed_requests_get_no_5xx(api: Api, base_url: str) -> None:
    cid = started(api.start("Plan 1 day in Lisbon"))["conversation_id"]
    api.read_run(cid)
    rng = random.Random(20261125)
    requests = [_malformed_request(rng, cid) for _ in range(10_000)]

    def send_all(chunk: list[dict[str, Any]]) -> list[tuple[int, str]]:
        statuses = []
        with httpx.Client(base_url=base_url, timeout=30) as http:
            for request in chunk:
                if request["method"] == "GET" and request["url"].endswith("/stream"):
                    # Streams of a finished run end at once (204), or are refused up front.
                    request["params"].setdefault("cursor", "0-1")
                response = http.request(**request)
                statuses.append((response.status_code, request["method"] + " " + request["url"]))
        return statuses

    with ThreadPoolExecutor(4) as pool:
        results = [
            s for chunk in pool.map(send_all, [requests[i::4] for i in range(4)]) for s in chunk
        ]
    server_errors = [(status, what) for status, what in results if status >= 500]
    assert len(results) == 10_000
    assert server_errors == [], server_errors[:5]
    # Nothing was lost: the conversation still works.
    assert started(api.send(cid, "Plan 1 day in Rome"))["conversation_id"] == cid
    assert api.read_run(cid)[-1]["type"] == "run.completed"
