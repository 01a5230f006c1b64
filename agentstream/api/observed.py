"""What an operator sees of each request: a span and one log line, and a span per stream.

Each request is a server span (continuing the caller's ``traceparent``, or the host's span when
the Functions host made one) named by its method and route template, with the agent,
conversation and run ids, and one log line: method, route template, status, duration, ids. A
stream response is a span of its own from opening to its end, linked to the run it reads, with
the events and bytes it sent and how it ended.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec

import redis.asyncio as aioredis
from fastapi import Request, Response
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from .. import telemetry
from ..events import Event
from ..redis_clients import live_hubs
from ..streamlog.keys import meta_key
from .streaming import EventStreamResponse

logger = logging.getLogger("agentstream.requests")

P = ParamSpec("P")

_IDS = {"agent": "agentstream.agent", "cid": "agentstream.conversation_id"}
_RUN_ID = "agentstream.run_id"
_LOG_NAMES = {"agentstream.agent": "agent", _IDS["cid"]: "conversation", _RUN_ID: "run"}

telemetry.observe_hub_connections(lambda: [hub.connection_count() for hub in live_hubs()])


def route_template(request: Request) -> str:
    """The request's path with each path parameter put back as ``{name}``."""
    path = request.url.path
    for name, value in request.path_params.items():
        if value:
            path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path


def observed(
    handler: Callable[Concatenate[Request, P], Awaitable[Response]],
) -> Callable[Concatenate[Request, P], Awaitable[Response]]:
    """The request's span and its one log line. Stack it above ``json_errors``."""

    @functools.wraps(handler)
    async def wrapper(request: Request, /, *args: P.args, **kwargs: P.kwargs) -> Response:
        route = route_template(request)
        started = time.perf_counter()
        parent = None
        if not trace.get_current_span().get_span_context().is_valid:
            parent = propagate.extract(dict(request.headers))
        with telemetry.tracer.start_as_current_span(
            f"{request.method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route},
        ) as span:
            response = await handler(request, *args, **kwargs)
            ids = _ids(request, response)
            span.set_attributes({"http.response.status_code": response.status_code, **ids})
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        duration_ms = (time.perf_counter() - started) * 1000
        logger.info(
            "request method=%s route=%s status=%d duration_ms=%.1f%s",
            request.method,
            route,
            response.status_code,
            duration_ms,
            "".join(f" {_LOG_NAMES[key]}={value}" for key, value in ids.items()),
            extra={"http.route": route, "http.response.status_code": response.status_code, **ids},
        )
        return response

    return wrapper


def _ids(request: Request, response: Response) -> dict[str, str]:
    ids = {_IDS[name]: value for name, value in request.path_params.items() if name in _IDS}
    if request.path_params.get("run_id"):
        ids[_RUN_ID] = request.path_params["run_id"]
    if response.status_code == 202 and response.media_type == "application/json":
        # A started run: its ids are in the (small) body.
        body = json.loads(bytes(response.body))
        for field, key in (("conversation_id", _IDS["cid"]), ("run_id", _RUN_ID)):
            if isinstance(body, dict) and isinstance(body.get(field), str):
                ids[key] = body[field]
    return ids


async def remember_run_trace(redis: aioredis.Redis, conversation_id: str, run_id: str) -> None:
    """Keep the started run's span context with the run, for the streams that read it."""
    carrier = telemetry.run_carrier().get("trace")
    if carrier:
        await redis.hset(meta_key(conversation_id), f"trace:{run_id}", json.dumps(carrier))


class StreamObservation:
    """A stream response's span and the worker's open-streams count, until the response ends."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        telemetry.active_streams.add(1)

    def batch_sent(self, batch: list[Event]) -> None:
        """Token -> client latency: from the batch's newest event being written until now."""
        telemetry.token_latency.record(max(0.0, time.time() - batch[-1].ts / 1000))

    def ended(self, response: EventStreamResponse) -> None:
        telemetry.active_streams.add(-1)
        self._span.set_attributes(
            {
                "agentstream.stream.events": response.events_sent,
                "agentstream.stream.bytes": response.bytes_sent,
                "agentstream.stream.end": response.end_reason,
            }
        )
        if response.end_reason == "store_error":
            self._span.set_status(Status(StatusCode.ERROR, response.end_reason))
        self._span.end()


async def observe_stream(
    redis: aioredis.Redis, agent: str, conversation_id: str
) -> StreamObservation | None:
    """A stream response's span, linked to the run it reads (the conversation's latest); None
    when telemetry is off."""
    if not telemetry.enabled():
        return None
    links = []
    attributes: dict[str, Any] = {_IDS["agent"]: agent, _IDS["cid"]: conversation_id}
    run_id = await redis.hget(meta_key(conversation_id), "latest_run")
    if run_id:
        attributes[_RUN_ID] = run_id
        stored = await redis.hget(meta_key(conversation_id), f"trace:{run_id}")
        if stored:
            linked = trace.get_current_span(propagate.extract(json.loads(stored)))
            links.append(Link(linked.get_span_context()))
    span = telemetry.tracer.start_span(
        "stream", kind=SpanKind.INTERNAL, links=links, attributes=attributes
    )
    return StreamObservation(span)
