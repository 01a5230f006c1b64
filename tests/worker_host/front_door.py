"""The harness's HTTP side: the host's front door and the Durable extension's entity endpoint.

Front door, for every HTTP function the worker indexed (routes and methods from its raw
bindings), routed as the host routes (``agentstream_dev.devhost.routing``): the request goes to
the worker's own web server (``HttpUri``) with ``x-ms-invocation-id``, and that forwarding starts
before the ``InvocationRequest`` is sent, as the host does. The invocation carries only the route
parameters and the other inputs (the ``durableClient`` JSON). The worker's response is relayed
chunk by chunk as it arrives; when the client goes away the forwarded request is closed, so the
worker sees the disconnect. A request no route takes is the host's own empty ``404``.

Entity endpoint (the durable client's ``rpcBaseUrl``): ``POST entities/{name}/{key}?op=``
queues an operation with the posted body as its input; queued operations reach the entity
function as batches in the extension's format (the development host's ``EntityHost``), each
batch one ``InvocationRequest``; ``GET entities/{name}/{key}`` reads the state (404 when none).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from agentstream_dev.devhost.durable_endpoints import durable_client_binding, entity_routes
from agentstream_dev.devhost.entities import EntityHost
from agentstream_dev.devhost.routing import Endpoint, HttpFunction, function_routes

from .host import FunctionInfo, WorkerHost, messages

logger = logging.getLogger(__name__)

DURABLE_PREFIX = "/durabletask"
TASK_HUB = "HarnessHub"
INVOCATION_HEADER = "x-ms-invocation-id"
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
    http_functions = {
        function: info
        for info in host.functions.values()
        if (function := HttpFunction.from_bindings(info.name, info.bindings)) is not None
    }
    routes: list[BaseRoute] = list(
        function_routes(http_functions, lambda f: _forwarder(host, f, http_functions[f], forwarder))
    )
    routes.extend(entity_routes(entities, DURABLE_PREFIX))
    # What no route takes is the host's own empty 404 (Starlette's default is a text body).
    app = Starlette(routes=routes, exception_handlers={404: _host_not_found})
    app.state.entities = entities
    app.state.forwarder = forwarder
    return app


async def _host_not_found(request: Request, exc: Exception) -> Response:
    return Response(status_code=404)


def _forwarder(
    host: WorkerHost, function: HttpFunction, info: FunctionInfo, forwarder: httpx.AsyncClient
) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        invocation_id = str(uuid.uuid4())
        upstream = _upstream_request(forwarder, host, request, invocation_id, await request.body())
        # As the host does: forwarding starts first (this task runs before the invocation
        # message leaves), the InvocationRequest follows; the worker pairs them by id.
        forwarded = asyncio.ensure_future(forwarder.send(upstream, stream=True))
        inputs = [_http_input(function.request_name, request.path_params)]
        inputs += [
            _string_input(name, durable_client_json(request)) for name in function.durable_clients
        ]
        outcome = await host.invoke(info, inputs, invocation_id)
        if outcome.result.status != messages.StatusResult.Success:
            forwarded.cancel()
            logger.error("%s failed: %s", info.name, outcome.result.exception.message)
            return Response(status_code=500)  # the host's own answer: empty
        response = await forwarded
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_RELAYED}
        return StreamingResponse(
            _relay(response), status_code=response.status_code, headers=headers
        )

    return endpoint


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
