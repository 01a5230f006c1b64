"""The OpenAPI document in the repo, held against the app: routes, error codes, events, bodies."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from agentstream.events import EVENT_TYPES
from agentstream.functions import UNROUTED_FUNCTION
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import AGENT, Api
from .devhost_process import REPO, running_devhost
from .standins import scripted_services

DOCUMENT = REPO / "agentstream" / "api" / "openapi.json"
PACKAGE = REPO / "agentstream"

# Code the app does not run (stand-ins and the console client) is left out of the scans.
NOT_THE_APP = ("devhost", "scripted_model", "client")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key appears twice among {keys}"
    return dict(pairs)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)


def test_the_document_validates_as_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


_DEVHOST_ROUTES = """
import json
from agentstream_dev.devhost.app import create_app, load_function_app
app = create_app(load_function_app())
app.state.entities.close()
print(json.dumps([(f.name, f.path, sorted(f.methods or ())) for f in app.state.http_functions]))
"""


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every HTTP function, as the development host reads the app's metadata;
    not the catch-all's, which answers what is no route (``404 not_found``, ``405``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    output = subprocess.run(
        [sys.executable, "-c", _DEVHOST_ROUTES],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    functions = json.loads(output)
    assert [path for name, path, _ in functions if name == UNROUTED_FUNCTION] == ["/api/{*path}"]
    return {
        (method, path)
        for name, path, methods in functions
        if name != UNROUTED_FUNCTION
        for method in methods
    }


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


def test_every_route_the_app_serves_is_documented_and_no_other(document: dict[str, Any]) -> None:
    served = served_routes()
    assert ("GET", "/api/openapi.json") in served
    assert documented_routes(document) == served


def _python_files() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in NOT_THE_APP:
            continue
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _literal(node: ast.AST | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def emitted_errors() -> set[tuple[int, str]]:
    """Every ``ApiError(status, "code", ...)`` and ``error_response(...)`` in the app's code."""
    found: set[tuple[int, str]] = set()
    forwarded = []
    for path, tree in _python_files():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _called(node) not in {
                "ApiError",
                "error_response",
            }:
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            args = [*node.args, None, None]
            status = _literal(args[0] or keywords.get("status"))
            code = _literal(args[1] or keywords.get("code"))
            if isinstance(status, int) and isinstance(code, str):
                found.add((status, code))
            else:
                forwarded.append(path.relative_to(PACKAGE).as_posix())
    # The one place that passes a code on rather than naming it: the ApiError handler.
    assert forwarded == ["api/errors.py"], f"error codes the scan cannot read in {forwarded}"
    return found


def documented_errors(document: dict[str, Any]) -> set[tuple[int, str]]:
    found = set()
    for item in document["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                for part in schema.get("allOf", []):
                    codes = part.get("properties", {}).get("error", {}).get("properties", {})
                    for code in codes.get("code", {}).get("enum", []):
                        found.add((int(status), code))
    return found


def test_every_error_code_the_app_can_emit_is_documented_with_its_status(
    document: dict[str, Any],
) -> None:
    emitted = emitted_errors()
    assert {(404, "conversation_not_found"), (500, "internal_error")} <= emitted
    # The catch-all's answers to a request that is no operation (a path no route has, a method
    # its route does not take) belong to no path of the document; docs/api.md lists them.
    unrouted = {(404, "not_found"), (405, "method_not_allowed")}
    assert unrouted <= emitted
    assert documented_errors(document) == emitted - unrouted


def run_failure_codes() -> set[str]:
    """The ``run.failed`` codes in the app's code: ``RunFailure("code", ...)``, ``code="..."``,
    ``{"code": "...", ...}`` and the keys of the agent's ``FAILURE_MESSAGES``."""
    found: set[str] = set()
    for _, tree in _python_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                if _called(node) == "RunFailure" and isinstance(_literal(node.args[0]), str):
                    found.add(node.args[0].value)  # type: ignore[attr-defined]
                found.update(
                    k.value.value
                    for k in node.keywords
                    if k.arg == "code" and isinstance(_literal(k.value), str)
                )
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if _literal(key) == "code" and isinstance(_literal(value), str):
                        found.add(value.value)  # type: ignore[attr-defined]
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "FAILURE_MESSAGES" for t in node.targets
            ):
                assert isinstance(node.value, ast.Dict)
                found.update(_literal(k) for k in node.value.keys)
    return found


def test_every_run_failed_code_is_documented(document: dict[str, Any]) -> None:
    codes = run_failure_codes()
    assert {"model_unavailable", "model_not_configured", "not_started", "no_result"} <= codes
    failed = document["components"]["schemas"]["RunFailed"]["allOf"][1]["properties"]["code"]
    assert set(failed["enum"]) == codes


def test_every_event_type_has_a_schema(document: dict[str, Any]) -> None:
    event = document["components"]["schemas"]["Event"]
    assert set(event["discriminator"]["mapping"]) == EVENT_TYPES
    assert len(event["oneOf"]) == len(EVENT_TYPES)


# --- The running app against the document ------------------------------------------------------


@pytest.fixture(scope="module")
def app_url(redis_port: int) -> Iterator[str]:
    with scripted_services(create_model_app(), redis_port) as env, running_devhost(env) as url:
        yield url


class Conformance:
    """Checks responses against the document's declared statuses and schemas."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        # The schema is resolved inside the whole document, so its $refs find the components.
        return Draft202012Validator({**schema, "components": self.document["components"]})

    def response(self, method: str, route: str, response: httpx.Response) -> dict[str, Any]:
        operation = self.document["paths"][route][method.lower()]
        declared = operation["responses"].get(str(response.status_code))
        assert declared is not None, f"{method} {route} answered an undocumented {response}"
        media_type = response.headers.get("content-type", "").split(";")[0]
        if response.status_code != 204:
            assert media_type in declared["content"], f"{media_type} for {method} {route}"
        if media_type == "application/json":
            schema = declared["content"][media_type]["schema"]
            self.validator(schema).validate(response.json())
        return declared

    def event(self, event: dict[str, Any]) -> None:
        self.validator({"$ref": "#/components/schemas/Event"}).validate(event)


def test_the_served_document_is_the_file(app_url: str) -> None:
    response = httpx.get(f"{app_url}/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == DOCUMENT.read_bytes()


def test_the_apps_answers_match_the_document(app_url: str, document: dict[str, Any]) -> None:
    check = Conformance(document)
    api = Api(app_url)
    conversations = "/api/agents/{agent}/conversations"
    conversation = conversations + "/{cid}"

    started = api.start("Plan 2 days in Lisbon")
    check.response("POST", conversations, started)
    assert started.status_code == 202
    assert started.headers["location"] == started.json()["stream_url"]
    cid, run_id = started.json()["conversation_id"], started.json()["run_id"]

    ndjson = api.http.get(
        api.stream_path(cid), params={"cursor": "0"}, headers={"Accept": "application/x-ndjson"}
    )
    check.response("GET", conversation + "/stream", ndjson)
    events = [json.loads(line) for line in ndjson.text.splitlines() if line.strip()]
    for event in events:
        check.event(event)
    assert {e["type"] for e in events} >= {
        "run.queued",
        "run.started",
        "tool.call",
        "tool.result",
        "message.delta",
        "run.completed",
    }
    sse = api.http.get(api.stream_path(cid), params={"cursor": "0"})
    check.response("GET", conversation + "/stream", sse)
    plain = api.http.get(api.stream_path(cid), headers={"Accept": "text/plain"})
    check.response("GET", conversation + "/stream", plain)
    done = api.http.get(api.stream_path(cid), params={"cursor": events[-1]["id"]})
    assert done.status_code == 204
    check.response("GET", conversation + "/stream", done)

    check.response("GET", conversation, api.http.get(f"{AGENT}/conversations/{cid}"))
    finished = api.http.post(f"{AGENT}/conversations/{cid}/runs/{run_id}/cancel")
    assert finished.status_code == 409
    check.response("POST", conversation + "/runs/{run_id}/cancel", finished)

    failing = api.http.post(
        f"{AGENT}/conversations/{cid}/messages",
        content="Tell me about trains [[fail-always:500]]",
        headers={"Content-Type": "text/plain"},
    )
    check.response("POST", conversation + "/messages", failing)
    last = api.read_run(cid, cursor=failing.json()["cursor"])[-1]
    assert last["type"] == "run.failed"
    check.event(last)

    unknown = "0" * 32
    for method, route, response in [
        ("POST", conversations, api.http.post(f"{AGENT}/conversations", content=b"{")),
        ("POST", conversations, api.http.post("/api/agents/nobody/conversations", json={})),
        ("POST", conversations, api.http.post(f"{AGENT}/conversations", data={"m": "x"})),
        ("GET", conversation, api.http.get(f"{AGENT}/conversations/{unknown}")),
        ("GET", conversation, api.http.get(f"{AGENT}/conversations/not-an-id")),
        (
            "GET",
            conversation + "/stream",
            api.http.get(api.stream_path(cid), headers={"Accept": "application/json"}),
        ),
    ]:
        assert response.status_code >= 400
        check.response(method, route, response)

    for route in ("/api/health", "/api/ui", "/api/openapi.json"):
        check.response("GET", route, api.http.get(route))
