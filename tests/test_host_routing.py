"""Routing as the Functions host does it (the development host's and the worker harness's), and
the catch-all's own reading of the app's route templates."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.testclient import TestClient

from agentstream.api.unrouted import Route, RouteTable, RouteTemplate
from agentstream_dev.devhost.routing import Endpoint, HttpFunction, function_routes


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("agents/{agent}/conversations", "agents/planner/conversations", {"agent": "planner"}),
        ("agents/{agent}/conversations", "AGENTS/planner/Conversations", {"agent": "planner"}),
        ("agents/{agent}/conversations", "agents//conversations", None),
        ("agents/{agent}/conversations", "agents/planner/conversations/", None),
        ("agents/{agent}/conversations", "agents/planner", None),
        ("health", "health/x", None),
        ("items/{id:int}", "items/7", {"id": "7"}),
        ("{*path}", "", {"path": ""}),
        ("{*path}", "a/b/c", {"path": "a/b/c"}),
        ("files/{*rest}", "files/a/b", {"rest": "a/b"}),
    ],
)
def test_a_template_matches_as_the_hosts_router(
    template: str, path: str, expected: dict[str, str] | None
) -> None:
    assert RouteTemplate.parse(template).match(path) == expected


def test_the_catch_all_tells_a_wrong_method_from_no_route() -> None:
    table = RouteTable(
        [
            Route(RouteTemplate.parse("items"), frozenset({"GET"})),
            Route(RouteTemplate.parse("items"), frozenset({"POST"})),
            Route(RouteTemplate.parse("items/{id}"), frozenset({"DELETE"})),
        ]
    )
    assert table.methods_at("items") == {"GET", "POST"}
    assert table.methods_at("items/3") == {"DELETE"}
    assert table.methods_at("items/3/x") == set()


def _function(name: str, route: str, methods: list[str] | None) -> HttpFunction:
    trigger = {"type": "httpTrigger", "name": "req", "route": route}
    if methods is not None:
        trigger["methods"] = methods
    function = HttpFunction.from_bindings(name, [trigger])
    assert function is not None
    return function


def _answers_with_its_name(function: HttpFunction) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(f"{function.name} {dict(request.path_params)}")

    return endpoint


def _client(*functions: HttpFunction) -> TestClient:
    return TestClient(Starlette(routes=list(function_routes(functions, _answers_with_its_name))))


def test_routes_are_tried_by_function_name_and_a_wrong_method_is_no_match() -> None:
    client = _client(
        _function("z_unrouted", "{*path}", None),
        _function("items", "items/{id}", ["GET"]),
        _function("recent", "items/recent", ["GET"]),
    )
    # "items" sorts before "recent": its parameter takes the literal, as on the host.
    assert client.get("/api/items/recent").text == "items {'id': 'recent'}"
    assert client.head("/api/items/3").status_code == 200  # GET takes HEAD
    assert client.delete("/api/items/3").text == "z_unrouted {'path': 'items/3'}"
    assert client.get("/api").text == "z_unrouted {'path': ''}"
    assert client.get("/elsewhere").status_code == 404  # outside the route prefix


def test_a_catch_all_named_first_takes_every_request() -> None:
    client = _client(_function("a_any", "{*path}", None), _function("items", "items", ["GET"]))
    assert client.get("/api/items").text == "a_any {'path': 'items'}"
