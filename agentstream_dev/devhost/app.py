"""Builds the development host's ASGI app from a Functions app's own function metadata."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import azure.functions as func
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from .entities import EntityHost, Operation, thread_count

logger = logging.getLogger(__name__)

ROUTE_PREFIX = "/api"
DURABLE_PREFIX = "/runtime/webhooks/durabletask"
TASK_HUB = "DevHostHub"

_ROUTE_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")
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
    routes: list[Route] = []
    entity_handlers: dict[str, Callable[[str], str]] = {}
    for function in function_app.get_functions():
        trigger = function.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            routes.append(_http_route(function))
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
    routes.extend(_durable_routes(entities, durable_available))
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
    app.state.http_routes = [(r.path, sorted(r.methods or [])) for r in routes]
    return app


async def _close_durable_client_session() -> None:
    """The durable SDK keeps one aiohttp session for its client calls and leaves closing it to
    the host's shutdown; without this, each stop logs "Unclosed client session"."""
    from azure.durable_functions.models.utils import http_utils

    close = getattr(http_utils, "_close_session", None)
    if close is not None:
        await close()


def _http_route(function: Any) -> Route:
    trigger = function.get_trigger()
    user_function = function.get_user_function()
    request_name = trigger.name
    client_names = [b.name for b in function.get_bindings() if b.type == "durableClient"]
    path = ROUTE_PREFIX + "/" + _ROUTE_PARAMETER.sub(r"{\1}", trigger.route.strip("/"))
    methods = [str(getattr(m, "value", m)).upper() for m in (trigger.methods or ["GET", "POST"])]

    async def endpoint(request: Request) -> Response:
        kwargs: dict[str, Any] = {request_name: request}
        for client_name in client_names:
            kwargs[client_name] = _durable_client_binding(request)
        try:
            return await _call(user_function, kwargs)
        except Exception as exc:  # noqa: BLE001 - the host answers 500, as the real one does
            logger.error("%s raised %s", function.get_function_name(), type(exc).__name__)
            return _error(
                500, "internal_error", "Something went wrong on our side. Please try again."
            )

    return Route(path, endpoint, methods=methods, name=function.get_function_name())


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    """The API's error body, for the answers the host gives itself."""
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"Cache-Control": "no-store", **headers},
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(
        404,
        "not_found",
        f"There is no {request.method} {request.url.path[:200]}. "
        "The API's routes are listed in /api/openapi.json.",
    )


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    # Each HTTP function is a route of its own, so the methods of every route on this path.
    methods = {
        method
        for route in request.app.router.routes
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
        for method in route.methods or ()
    }
    allowed = ", ".join(sorted(methods - {"HEAD"}))
    return _error(
        405,
        "method_not_allowed",
        f"{request.method} is not allowed on {request.url.path[:200]}; use {allowed}.",
        Allow=allowed,
    )


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


def durable_client_binding(webhooks_url: str, rpc_base_url: str, task_hub: str) -> str:
    """The JSON the Functions host passes for a ``durableClient`` binding.

    ``rpc_base_url`` is where the SDK's client sends entity signals
    (``{rpc_base_url}entities/{name}/{key}?op=``).
    """
    instance = f"{webhooks_url}/instances/INSTANCEID"
    orchestrator = f"{webhooks_url}/orchestrators/{{functionName}}"
    return json.dumps(
        {
            "taskHubName": task_hub,
            "creationUrls": {
                "createNewInstancePostUri": orchestrator,
                "createAndWaitOnNewInstancePostUri": orchestrator,
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": instance,
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}",
                "purgeHistoryDeleteUri": instance,
            },
            "baseUrl": webhooks_url,
            "requiredQueryStringParameters": "",
            "rpcBaseUrl": rpc_base_url,
            "httpBaseUrl": webhooks_url,
            "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
            "invocationId": str(uuid.uuid4()),
        }
    )


def _durable_routes(entities: EntityHost, available: bool) -> list[Route]:
    async def signal(request: Request) -> Response:
        if not available:
            return JSONResponse({"message": "durable backend unavailable (simulated)"}, 503)
        name, key = request.path_params["name"], request.path_params["key"]
        operation = request.query_params.get("op")
        if not entities.knows(name):
            return JSONResponse({"message": f"no entity function named {name}"}, 404)
        if not operation:
            return JSONResponse({"message": "the op query parameter is required"}, 400)
        body = (await request.body()).decode() or None
        entities.signal(name, key, operation, body)
        return Response(status_code=202)

    async def read_state(request: Request) -> Response:
        name, key = request.path_params["name"], request.path_params["key"]
        state = entities.state(name, key)
        if state is None:
            return Response(status_code=404)
        return JSONResponse(state)

    path = DURABLE_PREFIX + "/entities/{name}/{key}"
    return [
        Route(path, signal, methods=["POST"]),
        Route(path, read_state, methods=["GET"]),
    ]
