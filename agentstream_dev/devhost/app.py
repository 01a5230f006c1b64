"""Builds the development host's ASGI app from a Functions app's own function metadata."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import azure.functions as func
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from agentstream.api import unrouted

from .durable_endpoints import durable_client_binding, entity_routes
from .entities import EntityHost, Operation, thread_count
from .routing import Endpoint, HttpFunction, function_routes

logger = logging.getLogger(__name__)

DURABLE_PREFIX = "/runtime/webhooks/durabletask"
TASK_HUB = "DevHostHub"

# How long a stop waits for open responses, then for the entity batches running on threads.
STOP_CONNECTIONS_SECONDS = 1.0
STOP_ENTITIES_SECONDS = 2.0

InFlight = list[tuple[str, str, Operation]]


def load_function_app(module_name: str = "function_app") -> func.FunctionRegister:
    module = importlib.import_module(module_name)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(apps) != 1:
        raise RuntimeError(f"{module_name} must define exactly one function app")
    return apps[0]


def create_app(
    function_app: func.FunctionRegister,
    durable_available: bool = True,
    on_stop: Callable[[InFlight], Awaitable[object]] | None = None,
    extra_routes: list[Route] | None = None,
) -> Starlette:
    """Serve every HTTP function of the app, the durable entity endpoints, and ``extra_routes``
    (the development host's own).

    ``durable_available=False`` makes the durable endpoints answer 503, to try out how the app
    behaves when the Durable Task backend is down. ``on_stop`` is told which entity operations
    are running when the host stops (to end them early); they get
    :data:`STOP_ENTITIES_SECONDS` to finish.
    """
    http_functions: list[tuple[HttpFunction, Callable[..., Any]]] = []
    entity_handlers: dict[str, Callable[[str], str]] = {}
    for function in function_app.get_functions():
        trigger = function.get_trigger()
        bindings = json.loads(function.get_function_json())["bindings"]
        http = HttpFunction.from_bindings(function.get_function_name(), bindings)
        if http is not None:
            http_functions.append((http, function.get_user_function()))
        elif trigger.get_binding_name() == "entityTrigger":
            name = trigger.entity_name or function.get_function_name()
            entity_handlers[name] = function.get_user_function()
        else:
            logger.warning(
                "%s: %s triggers are not served by the development host",
                function.get_function_name(),
                trigger.get_binding_name(),
            )
    # As in the Python worker: sync functions (the entity) share one pool of threads.
    entities = EntityHost(entity_handlers, max_workers=thread_count(os.environ))
    user_functions = dict(http_functions)
    routes: list[BaseRoute] = list(
        function_routes(user_functions, lambda f: _http_endpoint(f, user_functions[f]))
    )
    routes.extend(entity_routes(entities, DURABLE_PREFIX, durable_available))
    routes.extend(extra_routes or [])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if on_stop is not None and entities.busy():
            await on_stop(entities.in_flight())
        await entities.wait_idle(STOP_ENTITIES_SECONDS)
        entities.close()
        await _close_durable_client_session()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
    # Like the Functions host: `/api/health/` is not `/api/health` (no redirect to it).
    app.router.redirect_slashes = False
    app.state.entities = entities
    app.state.http_functions = [function for function, _ in http_functions]
    return app


async def _close_durable_client_session() -> None:
    """The durable SDK keeps one aiohttp session for its client calls and leaves closing it to
    the host's shutdown; without this, each stop logs "Unclosed client session"."""
    from azure.durable_functions.models.utils import http_utils

    close = getattr(http_utils, "_close_session", None)
    if close is not None:
        await close()


def _http_endpoint(function: HttpFunction, user_function: Callable[..., Any]) -> Endpoint:
    """Calls the user function in this process, as the worker would: the request and a
    ``durableClient`` binding for each such input."""

    async def endpoint(request: Request) -> Response:
        kwargs: dict[str, Any] = {function.request_name: request}
        for client_name in function.durable_clients:
            kwargs[client_name] = _durable_client_binding(request)
        try:
            return await _call(user_function, kwargs)
        except Exception as exc:  # noqa: BLE001 - an empty 500, as the Functions host answers
            logger.error("%s raised %s", function.name, type(exc).__name__)
            return Response(status_code=500)

    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    # Outside the route prefix: the app's catch-all answers everything under it.
    return unrouted.not_found(request.method, request.url.path)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    # The durable endpoints are the only Starlette routes with methods of their own.
    methods = {
        method
        for route in request.app.router.routes
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
        for method in route.methods or ()
    }
    return unrouted.method_not_allowed(request.method, request.url.path, methods)


async def _call(user_function: Callable[..., Any], kwargs: dict[str, Any]) -> Response:
    result = user_function(**kwargs)
    if isinstance(result, Awaitable):
        result = await result
    if not isinstance(result, Response):
        raise TypeError("HTTP functions must return a FastAPI/Starlette response")
    return result


def _durable_client_binding(request: Request) -> str:
    base = str(request.base_url).rstrip("/")
    return durable_client_binding(base + DURABLE_PREFIX, base + DURABLE_PREFIX + "/", TASK_HUB)
