"""Who is calling (AUTH_MODE=entra against a local JWKS endpoint), and what belongs to whom."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request

from agentstream.auth import Unauthenticated
from agentstream.auth.caller import client_address
from agentstream.auth.easyauth import easyauth_caller
from agentstream.config import ConfigError, Settings
from agentstream_client.http import ApiClient
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT
from .devhost_process import running_devhost
from .jwks import LocalIssuer, serving_issuer, unsigned_token
from .standins import scripted_services

UNKNOWN = "0" * 32
UNKNOWN_RUN = "f" * 32


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with serving_issuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def base_url(redis_port: int, issuer: LocalIssuer) -> Iterator[str]:
    model = create_model_app(delay_seconds=0.003)
    with (
        scripted_services(model, redis_port) as services,
        running_devhost({**services, **issuer.env(), "STREAM_KEEPALIVE_SECONDS": "1"}) as url,
    ):
        yield url


def client(base_url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=30)


@pytest.fixture
def alice(base_url: str, issuer: LocalIssuer) -> Iterator[httpx.Client]:
    with client(base_url, issuer.token("alice-oid")) as http:
        yield http


@pytest.fixture
def bob(base_url: str, issuer: LocalIssuer) -> Iterator[httpx.Client]:
    with client(base_url, issuer.token("bob-oid")) as http:
        yield http


def start(http: httpx.Client, message: str = "Plan 2 days in Lisbon", **headers: str) -> Any:
    response = http.post(f"{AGENT}/conversations", json={"message": message}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def wait_for_end(http: httpx.Client, cid: str) -> None:
    response = http.get(f"{AGENT}/conversations/{cid}/stream", params={"cursor": "0"})
    assert response.status_code == 200 and "run.completed" in response.text


def test_a_valid_token_works_end_to_end(alice: httpx.Client) -> None:
    body = start(alice)
    wait_for_end(alice, body["conversation_id"])
    status = alice.get(body["status_url"])
    assert status.status_code == 200 and status.json()["runs"][0]["status"] == "completed"


def _bad_tokens(issuer: LocalIssuer) -> dict[str, str | None]:
    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "expired": issuer.token("alice-oid", exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "wrong_audience": issuer.token("alice-oid", aud="api://someone-else"),
        "wrong_issuer": issuer.token("alice-oid", iss="https://login.example.com/other/v2.0"),
        "bad_signature": issuer.token("alice-oid", key=other_key),
        "alg_none": unsigned_token(
            {"iss": issuer.issuer, "aud": "api://agentstream-tests", "oid": "x", "exp": now + 60}
        ),
        "not_a_jwt": "not.a.token",
        "missing": None,
    }


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "bad_signature",
        "alg_none",
        "not_a_jwt",
        "missing",
    ],
)
def test_bad_or_missing_credentials_are_401_with_a_challenge(
    base_url: str, issuer: LocalIssuer, alice: httpx.Client, case: str
) -> None:
    cid = start(alice)["conversation_id"]
    token = _bad_tokens(issuer)[case]
    with client(base_url, token) as http:
        for method, path in [
            ("POST", f"{AGENT}/conversations"),
            ("GET", f"{AGENT}/conversations"),
            ("GET", f"{AGENT}/conversations/{cid}"),
            ("GET", f"{AGENT}/conversations/{cid}/stream"),
            ("POST", f"{AGENT}/conversations/{cid}/messages"),
            ("DELETE", f"{AGENT}/conversations/{cid}"),
        ]:
            response = http.request(method, path, json={"message": "hi"})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith('Bearer realm="agentstream"')
            assert ('error="invalid_token"' in response.headers["www-authenticate"]) == (
                token is not None
            )
            assert response.json()["error"]["code"] == "unauthenticated"
    # Nothing happened to the conversation.
    assert alice.get(f"{AGENT}/conversations/{cid}").status_code == 200


def _comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in response.headers.items() if k not in {"date"})
    return response.status_code, response.content, headers


def test_another_callers_conversation_is_exactly_an_unknown_one(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    body = start(alice, "Plan 5 days in Lisbon [[slow]]")
    cid, run = body["conversation_id"], body["run_id"]
    routes = [
        ("GET", "/conversations/{cid}", None),
        ("GET", "/conversations/{cid}/stream", None),
        ("GET", "/conversations/{cid}/stream?cursor=0", None),
        ("POST", "/conversations/{cid}/messages", {"message": "And a day in Porto"}),
        ("POST", "/conversations/{cid}/runs/{run}/cancel", None),
        ("DELETE", "/conversations/{cid}", None),
    ]
    for method, template, payload in routes:
        theirs = bob.request(method, AGENT + template.format(cid=cid, run=run), json=payload)
        unknown = bob.request(
            method, AGENT + template.format(cid=UNKNOWN, run=UNKNOWN_RUN), json=payload
        )
        assert theirs.status_code == 404, (template, theirs.text)
        assert _comparable(theirs) == _comparable(unknown), template
    # Bob's attempts changed nothing: the run is still Alice's and still going to its end.
    wait_for_end(alice, cid)
    status = alice.get(f"{AGENT}/conversations/{cid}").json()
    assert [r["run_id"] for r in status["runs"]] == [run]
    assert not status["runs"][0]["cancel_requested"]


def test_idempotency_keys_are_scoped_to_the_caller(alice: httpx.Client, bob: httpx.Client) -> None:
    first = start(alice, "Plan 2 days in Porto", **{"Idempotency-Key": "shared-key-1"})
    again = start(alice, "Plan 2 days in Porto", **{"Idempotency-Key": "shared-key-1"})
    assert again["conversation_id"] == first["conversation_id"]
    assert again["run_id"] == first["run_id"]
    bobs = start(bob, "Plan 2 days in Porto", **{"Idempotency-Key": "shared-key-1"})
    assert bobs["conversation_id"] != first["conversation_id"]
    # Bob's other message under that key is his own business, not a clash with Alice's key.
    other = bob.post(
        f"{AGENT}/conversations",
        json={"message": "Plan 3 days in Rome"},
        headers={"Idempotency-Key": "shared-key-1"},
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_listing_shows_only_ones_own_newest_first_in_pages(
    base_url: str, issuer: LocalIssuer
) -> None:
    with (
        client(base_url, issuer.token("carol-oid")) as carol,
        client(base_url, issuer.token("dave-oid")) as dave,
    ):
        mine = [start(carol)["conversation_id"] for _ in range(3)]
        theirs = start(dave)["conversation_id"]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = carol.get(f"{AGENT}/conversations", params=params)
            assert page.status_code == 200, page.text
            seen.extend(c["conversation_id"] for c in page.json()["conversations"])
            pages += 1
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(mine)) and pages == 2
        assert theirs not in seen
        listed = dave.get(f"{AGENT}/conversations").json()["conversations"]
        assert [c["conversation_id"] for c in listed] == [theirs]
        assert listed[0]["status_url"] == f"{AGENT}/conversations/{theirs}"
        # A deleted conversation leaves its owner's list.
        assert dave.delete(f"{AGENT}/conversations/{theirs}").status_code == 204
        assert dave.get(f"{AGENT}/conversations").json()["conversations"] == []


def test_a_bad_page_cursor_or_limit_is_400(alice: httpx.Client) -> None:
    for params in ({"cursor": "nonsense"}, {"limit": "0"}, {"limit": "101"}, {"limit": "x"}):
        response = alice.get(f"{AGENT}/conversations", params=params)
        assert response.status_code == 400, params


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "client": ("10.0.0.9", 5000)})


def _principal(claims: list[dict[str, str]]) -> str:
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


def test_easyauth_trusts_the_platforms_principal_headers() -> None:
    by_id = easyauth_caller(_request({"X-MS-CLIENT-PRINCIPAL-ID": "oid-1"}))
    assert by_id.owner == "easyauth:oid-1" and by_id.limit_key == by_id.owner
    claim = {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "oid-2"}
    by_claim = easyauth_caller(_request({"X-MS-CLIENT-PRINCIPAL": _principal([claim])}))
    assert by_claim.owner == "easyauth:oid-2"
    for principal in (None, "%%%", _principal([])):
        headers = {"X-MS-CLIENT-PRINCIPAL": principal} if principal else {}
        with pytest.raises(Unauthenticated):
            easyauth_caller(_request(headers))


def test_easyauth_refuses_to_start_unless_the_platform_authenticates() -> None:
    with pytest.raises(ConfigError, match="WEBSITE_AUTH_ENABLED"):
        Settings.from_env({"AUTH_MODE": "easyauth"})
    settings = Settings.from_env({"AUTH_MODE": "easyauth", "WEBSITE_AUTH_ENABLED": "True"})
    assert settings.auth.mode == "easyauth"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AUTH_MODE": "magic"}, "AUTH_MODE"),
        ({"AUTH_MODE": "entra", "AUTH_ENTRA_AUDIENCE": "api://x"}, "AUTH_ENTRA_TENANT_ID"),
        ({"AUTH_MODE": "entra", "AUTH_ENTRA_TENANT_ID": "t"}, "AUTH_ENTRA_AUDIENCE"),
    ],
)
def test_auth_settings_errors_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_entra_defaults_to_the_tenants_v2_issuer_and_keys() -> None:
    auth = Settings.from_env(
        {"AUTH_MODE": "entra", "AUTH_ENTRA_TENANT_ID": "t1", "AUTH_ENTRA_AUDIENCE": "a, b"}
    ).auth
    assert auth.issuer == "https://login.microsoftonline.com/t1/v2.0"
    assert auth.jwks_url == "https://login.microsoftonline.com/t1/discovery/v2.0/keys"
    assert auth.audiences == ("a", "b")


def test_key_mode_limits_by_the_address_the_front_end_saw() -> None:
    assert client_address(_request({})) == "10.0.0.9"
    spoofed = {"X-Forwarded-For": "1.1.1.1, 203.0.113.7:61000"}
    assert client_address(_request(spoofed)) == "203.0.113.7"
    assert client_address(_request({"X-Forwarded-For": "[2001:db8::1]:443"})) == "2001:db8::1"


def test_the_console_client_and_eventsource_urls_carry_the_token(
    base_url: str, issuer: LocalIssuer
) -> None:
    token = issuer.token("erin-oid")
    api = ApiClient(base_url, token=token)
    try:
        cid = api.start("Plan 2 days in Lisbon", None)["conversation_id"]
    finally:
        api.close()
    # What the browser page's EventSource does: the token as access_token, on a GET only.
    stream = httpx.get(
        f"{base_url}{AGENT}/conversations/{cid}/stream",
        params={"cursor": "0", "access_token": token},
        timeout=30,
    )
    assert stream.status_code == 200 and "run.completed" in stream.text
    posted = httpx.post(
        f"{base_url}{AGENT}/conversations/{cid}/messages",
        params={"access_token": token},
        json={"message": "hi"},
        timeout=30,
    )
    assert posted.status_code == 401


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it)")
def test_the_browser_page_sends_the_token_from_its_fragment(
    base_url: str, alice: httpx.Client, bob: httpx.Client, issuer: LocalIssuer
) -> None:
    from playwright.sync_api import sync_playwright

    token = issuer.token("alice-oid")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/api/ui#access_token={token}")
            page.fill("#message", "Plan 2 days in Lisbon")
            page.click("#send")
            page.wait_for_function("window.agentState.finished && !window.agentState.sending")
            state = page.evaluate("window.agentState")
        finally:
            browser.close()
    assert state["runText"].startswith("Here is your 2-day plan for Lisbon")
    # The page's POST and its EventSource carried Alice's token: the conversation is hers.
    mine = alice.get(f"{AGENT}/conversations/{state['conversationId']}")
    assert mine.status_code == 200
    assert bob.get(f"{AGENT}/conversations/{state['conversationId']}").status_code == 404
