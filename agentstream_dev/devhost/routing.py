"""HTTP routing as the Functions host does it, shared by the development host and the harness
that drives the real Python worker (``tests/worker_host``).

The host maps each HTTP function's route template under the route prefix (``/api``), with a
method constraint (none when the function names no methods; ``HEAD`` added to ``GET``). It tries
the routes in the order of their functions' names, compared without regard to case, and takes the
first whose template and method both match; a method that does not match is no match, so the
search goes on (to the app's catch-all, for one). Nothing matched is the host's own empty
``404``. Templates match as :class:`agentstream.api.unrouted.RouteTemplate` says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from agentstream.api.unrouted import RouteTemplate

ROUTE_PREFIX = "/api"


@dataclass(frozen=True)
class HttpFunction:
    """An HTTP function, read from its bindings (``function.json``'s, or the worker's raw ones)."""

    name: str
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    request_name: str
    durable_clients: tuple[str, ...]

    @classmethod
    def from_bindings(cls, name: str, bindings: Iterable[dict[str, Any]]) -> HttpFunction | None:
        """None for a function that is not HTTP-triggered."""
        bindings = list(bindings)
        trigger = next((b for b in bindings if b["type"] == "httpTrigger"), None)
        if trigger is None:
            return None
        methods = trigger.get("methods")
        return cls(
            name=name,
            template=RouteTemplate.parse(trigger.get("route") or name),
            methods=frozenset(m.upper() for m in methods) if methods else None,
            request_name=trigger["name"],
            durable_clients=tuple(b["name"] for b in bindings if b["type"] == "durableClient"),
        )

    @property
    def path(self) -> str:
        """The route as a path pattern: ``/api/agents/{agent}/conversations``."""
        return f"{ROUTE_PREFIX}/{self.template.template.strip('/')}"

    def takes(self, method: str) -> bool:
        if self.methods is None:
            return True
        return method in self.methods or (method == "HEAD" and "GET" in self.methods)


Endpoint = Callable[[Request], Awaitable[Response]]


class FunctionRoute(BaseRoute):
    """One HTTP function's route: a match needs its template and its method."""

    def __init__(self, function: HttpFunction, endpoint: Endpoint) -> None:
        self.function = function
        self.endpoint = endpoint
        self.name = function.name

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not self.function.takes(scope["method"]):
            return Match.NONE, {}
        path: str = scope["path"]
        if path == ROUTE_PREFIX:
            relative = ""
        elif path.startswith(ROUTE_PREFIX + "/"):
            relative = path[len(ROUTE_PREFIX) + 1 :]
        else:
            return Match.NONE, {}
        values = self.function.template.match(relative)
        if values is None:
            return Match.NONE, {}
        return Match.FULL, {"endpoint": self.endpoint, "path_params": values}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NotImplementedError("function routes are not reversed")


def host_order(functions: Iterable[HttpFunction]) -> list[HttpFunction]:
    """The order the host tries the routes in: by function name, without regard to case."""
    return sorted(functions, key=lambda function: function.name.upper())


def function_routes(
    functions: Iterable[HttpFunction], endpoint_for: Callable[[HttpFunction], Endpoint]
) -> list[FunctionRoute]:
    """A route per HTTP function, in the host's order (the catch-all's name sorts last)."""
    return [FunctionRoute(function, endpoint_for(function)) for function in host_order(functions)]
