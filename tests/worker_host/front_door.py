"""The harness's HTTP side: the host's front door and the Durable extension's entity endpoint.

Front door, for every HTTP function the worker indexed (routes and methods from its raw
bindings): the request goes to the worker's own web server (``HttpUri``) with
``x-ms-invocation-id``, and that forwarding starts before the ``InvocationRequest`` is sent,
as the host does. The invocation carries only the route parameters and the other inputs (the
``durableClient`` JSON). The worker's response is relayed chunk by chunk as it arrives; when the
client goes away the forwarded request is closed, so the worker sees the disconnect.

Entity endpoint (the durable client's ``rpcBaseUrl``): ``POST entities/{name}/{key}?op=``
queues an operation with the posted body as its input; queued operations reach the entity
function as batches in the extension's format (the development host's ``EntityHost``), each
batch one ``InvocationRequest``; ``GET entities/{name}/{key}`` reads the state (404 when none).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentstream_dev.devhost.app import durable_client_binding
from agentstream_dev.devhost.entities import EntityHost

from .host import FunctionInfo, WorkerHost, messages

logger = logging.getLogger(__name__)

DURABLE_PREFIX = "/durabletask"
TASK_HUB = "HarnessHub"
INVOCATION_HEADER = "x-ms-invocation-id"
_ROUTE_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")
# Hop-by-hop headers and those the relaying server sets itself.
_NOT_RELAYED = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date"}
_NOT_FORWARDED = {"host", "content-length", "connection"}


_CONNECTIONS = httpx.Limits(max_connections=None, max_keepalive_connections=20)


@dataclass
class EntityBatches:
    """Every batch the stand-in delivered and the reply it got, for tests to inspect."""

    delivered: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def for_key(self, key: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(b, r) for b, r in self.delivered if b["self"]["key"] == key]


def create_front_door(
    host: WorkerHost, loop: asyncio.AbstractEventLoop, batches: EntityBatches
) -> Starlette:
    forwarder = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10), limits=_CONNECTIONS)
    handlers = {
        info.trigger["entityName"]: _entity_handler(host, info, loop, batches)
        for info in host.functions.values()
        if info.trigger["type"] == "entityTrigger"
    }
    # The extension holds no thread per batch; the worker's thread pool is what limits them.
    entities = EntityHost(handlers, max_workers=64)
    routes = [
        _http_route(host, info, forwarder)
        for info in host.functions.values()
        if info.trigger["type"] == "httpTrigger"
    ]
    routes.extend(_entity_routes(entities))
    app = Starlette(routes=routes)
    app.state.entities = entities
    app.state.forwarder = forwarder
    return app


def _http_route(host: WorkerHost, info: FunctionInfo, forwarder: httpx.AsyncClient) -> Route:
    trigger = info.trigger
    path = "/api/" + _ROUTE_PARAMETER.sub(r"{\1}", trigger["route"].strip("/"))
    methods = [m.upper() for m in trigger.get("methods") or ["GET", "POST"]]
    clients = info.inputs_of_type("durableClient")

    async def endpoint(request: Request) -> Response:
        invocation_id = str(uuid.uuid4())
        upstream = _upstream_request(forwarder, host, request, invocation_id, await request.body())
        # As the host does: forwarding starts first (this task runs before the invocation
        # message leaves), the InvocationRequest follows; the worker pairs them by id.
        forwarded = asyncio.ensure_future(forwarder.send(upstream, stream=True))
        inputs = [_http_input(trigger["name"], request.path_params)]
        inputs += [_string_input(name, durable_client_json(request)) for name in clients]
        outcome = await host.invoke(info, inputs, invocation_id)
        if outcome.result.status != messages.StatusResult.Success:
            forwarded.cancel()
            logger.error("%s failed: %s", info.name, outcome.result.exception.message)
            return JSONResponse({"error": "the function failed"}, status_code=500)
        response = await forwarded
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_RELAYED}
        return StreamingResponse(
            _relay(response), status_code=response.status_code, headers=headers
        )

    return Route(path, endpoint, methods=methods, name=info.name)


def _upstream_request(
    forwarder: httpx.AsyncClient,
    host: WorkerHost,
    request: Request,
    invocation_id: str,
    body: bytes,
) -> httpx.Request:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED]
    headers.append((INVOCATION_HEADER, invocation_id))
    url = host.http_uri + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return forwarder.build_request(request.method, url, headers=headers, content=body)


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    """The worker's body, each chunk passed on as it arrives; closed if the client leaves."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


def _http_input(name: str, route_params: dict[str, str]) -> Any:
    # With RequiresRouteParameters the host sends the route parameters and nothing else.
    http = messages.RpcHttp(params={k: str(v) for k, v in route_params.items()})
    return messages.ParameterBinding(name=name, data=messages.TypedData(http=http))


def _string_input(name: str, value: str) -> Any:
    return messages.ParameterBinding(name=name, data=messages.TypedData(string=value))


def durable_client_json(request: Request) -> str:
    """The ``durableClient`` binding, its RPC base URL pointing at the entity stand-in."""
    base = str(request.base_url).rstrip("/")
    webhooks = f"{base}/runtime/webhooks/durabletask"
    return durable_client_binding(webhooks, f"{base}{DURABLE_PREFIX}/", TASK_HUB)


def _entity_routes(entities: EntityHost) -> list[Route]:
    """The extension's entity endpoint: signal (POST) and read the state (GET)."""

    async def signal(request: Request) -> Response:
        name, key = request.path_params["name"], request.path_params["key"]
        operation = request.query_params.get("op")
        if not entities.knows(name):
            return JSONResponse({"message": f"no entity function named {name}"}, 404)
        if not operation:
            return JSONResponse({"message": "the op query parameter is required"}, 400)
        entities.signal(name, key, operation, (await request.body()).decode() or None)
        return Response(status_code=202)

    async def read_state(request: Request) -> Response:
        state = entities.state(request.path_params["name"], request.path_params["key"])
        return Response(status_code=404) if state is None else JSONResponse(state)

    path = DURABLE_PREFIX + "/entities/{name}/{key}"
    return [Route(path, signal, methods=["POST"]), Route(path, read_state, methods=["GET"])]


def _entity_handler(
    host: WorkerHost, info: FunctionInfo, loop: asyncio.AbstractEventLoop, batches: EntityBatches
) -> Callable[[str], str]:
    """Runs on an ``EntityHost`` thread: one batch -> one invocation of the entity function."""
    trigger = info.trigger["name"]

    def handle(batch: str) -> str:
        inputs = [_string_input(trigger, batch)]
        outcome = asyncio.run_coroutine_threadsafe(host.invoke(info, inputs), loop).result()
        if outcome.result.status != messages.StatusResult.Success:
            raise RuntimeError(f"entity invocation failed: {outcome.result.exception.message}")
        value = outcome.return_value
        reply = value.json if value.WhichOneof("data") == "json" else value.string
        batches.delivered.append((json.loads(batch), json.loads(reply)))
        return reply

    return handle
