"""The HTTP functions' logic, on the FastAPI request and response types.

``function_app.py`` binds each handler to its route; the handlers do the rest.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import azure.durable_functions as df
import redis.asyncio as aioredis
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from .. import telemetry
from ..agents.registry import registered_agents
from ..config import Settings, get_settings
from ..entity_protocol import DELETE_OPERATION, RUN_OPERATION
from ..events import stream_format
from ..model_probe import model_status
from ..redis_clients import (
    async_redis,
    blocking_reader_redis,
    reader_redis,
    stream_hub,
)
from ..streamlog import control, owners
from ..streamlog.agent_binding import belongs_to, bind_agent
from ..streamlog.capacity import AtCapacity
from ..streamlog.cursor import MalformedCursor, parse_cursor
from ..streamlog.reader import (
    ConversationNotFound,
    CursorBeyondEnd,
    CursorTrimmed,
    NothingToDeliver,
    open_stream,
    reader_slots,
)
from ..streamlog.scripts import FINISHED_STATUSES
from . import callers, validation
from .callers import authenticated, caller_of
from .errors import ApiError, json_errors
from .negotiation import negotiate
from .observed import observe_stream, observed, remember_run_trace
from .streaming import STREAM_HEADERS, EventStreamResponse
from .turns import history_of, runs_in_state, turns_of

logger = logging.getLogger(__name__)


def entity_instance_id(agent: str, conversation_id: str) -> str:
    """The conversation's entity: the agent's entity (entity name = agent name), keyed by id."""
    return f"@{agent}@{conversation_id}"


def _conversation_path(agent: str, conversation_id: str) -> str:
    return f"/api/agents/{agent}/conversations/{conversation_id}"


def _conversation_not_found() -> ApiError:
    return ApiError(
        404,
        "conversation_not_found",
        "No such conversation: it expired, was deleted or never existed. Start a new one.",
    )


def _run_not_found() -> ApiError:
    return ApiError(
        404, "run_not_found", "No such run in this conversation: it expired or never existed."
    )


async def _require_owner(
    req: Request,
    redis: aioredis.Redis,
    conversation_id: str,
    not_found: ApiError | None = None,
) -> None:
    """Another caller's conversation answers exactly as an unknown one (``not_found``).

    Without caller identities (``AUTH_MODE=key``) every caller shares one owner: nothing to check.
    """
    owner = caller_of(req).owner
    if owner and not await owners.owns(redis, conversation_id, owner):
        raise not_found or _conversation_not_found()


def _idempotency_key_reused() -> ApiError:
    return ApiError(
        422,
        "idempotency_key_reused",
        "This Idempotency-Key was already used for a different message; use a new key.",
    )


def _durable_unavailable(what: str) -> ApiError:
    return ApiError(503, "durable_unavailable", f"{what} Please try again.")


def _limits(settings: Settings) -> control.Limits:
    return control.Limits.from_settings(settings)


def _urls(agent: str, conversation_id: str, run_id: str, cursor: str) -> dict[str, str]:
    base = _conversation_path(agent, conversation_id)
    return {
        "stream_url": f"{base}/stream?cursor={cursor}",
        "status_url": base,
        "cancel_url": f"{base}/runs/{run_id}/cancel",
    }


@observed
@json_errors
@authenticated
async def start_conversation(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """``POST /api/agents/{agent}/conversations``: a new conversation and its first message."""
    settings = get_settings()
    agent = validation.agent_name(req)
    key = validation.idempotency_key(req)
    message = await validation.message(req, settings.max_message_chars)
    owner = caller_of(req).owner
    conversation_id = uuid.uuid4().hex
    if key is not None:
        claimed = await control.claim_new_conversation(
            async_redis(settings), key, message, conversation_id, settings.stream_ttl_seconds, owner
        )
        # The same key and message sent to another agent is another request.
        if claimed is None or not await belongs_to(async_redis(settings), claimed, agent):
            raise _idempotency_key_reused()
        conversation_id = claimed
    run = RunRequest(agent, conversation_id, message, key, new=True)
    return await _start(settings, client, req, run)


@observed
@json_errors
@authenticated
async def post_message(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """``POST /api/agents/{agent}/conversations/{cid}/messages``: the next message."""
    settings = get_settings()
    agent = validation.agent_name(req)
    conversation_id = validation.conversation_id(req)
    key = validation.idempotency_key(req)
    message = await validation.message(req, settings.max_message_chars)
    await _check_agent(settings, conversation_id, agent)
    run = RunRequest(agent, conversation_id, message, key, new=False)
    return await _start(settings, client, req, run)


async def _check_agent(
    settings: Settings, conversation_id: str, agent: str, not_found: ApiError | None = None
) -> None:
    """Another agent's conversation answers as an unknown one (``not_found``)."""
    if not await belongs_to(async_redis(settings), conversation_id, agent):
        raise not_found or _conversation_not_found()


@dataclass(frozen=True)
class RunRequest:
    """A message to run in a conversation: what the native and the Responses routes both start."""

    agent: str
    conversation_id: str
    message: str
    idempotency_key: str | None
    new: bool  # the conversation's first run: the request creates it


async def _start(
    settings: Settings, client: df.DurableOrchestrationClient, req: Request, run: RunRequest
) -> Response:
    started = await begin_run(settings, client, req, run)
    assert started.run_id is not None and started.cursor is not None
    agent, conversation_id = run.agent, run.conversation_id
    urls = _urls(agent, conversation_id, started.run_id, started.cursor)
    body = {
        "conversation_id": conversation_id,
        "entity_id": entity_instance_id(agent, conversation_id),
        "run_id": started.run_id,
        "cursor": started.cursor,
        **urls,
    }
    return JSONResponse(body, status_code=202, headers={"Location": urls["stream_url"]})


async def begin_run(
    settings: Settings, client: df.DurableOrchestrationClient, req: Request, run: RunRequest
) -> control.RunStart:
    """Admit the run against the caller's limits, take the conversation's run lock, write
    ``run.queued`` and signal the agent's entity.

    Returns the run (``started`` or, for a repeated ``Idempotency-Key``, ``duplicate``); every
    other outcome is an :class:`ApiError`.
    """
    agent, conversation_id, message, key, new = (
        run.agent,
        run.conversation_id,
        run.message,
        run.idempotency_key,
        run.new,
    )
    redis = async_redis(settings)
    owner = caller_of(req).owner
    run_id = uuid.uuid4().hex
    admission = await callers.admit_run(req, redis, conversation_id, run_id, key)
    started = await control.start_run(
        redis,
        conversation_id,
        run_id,
        message,
        idempotency_key=key,
        must_exist=not new,
        limits=_limits(settings),
        owner=owner,
    )
    if started.outcome != "started":
        await admission.release()
    if started.outcome == "unknown":
        raise _conversation_not_found()
    if started.outcome == "mismatch":
        raise _idempotency_key_reused()
    if started.outcome == "busy":
        raise ApiError(
            409,
            "run_active",
            "A run is already in progress in this conversation; wait for it to end or cancel it.",
            active_run=started.run_id,
        )
    assert started.run_id is not None and started.cursor is not None
    if started.outcome == "started" and new:
        ttl = settings.conversation_ttl_seconds
        await owners.remember(redis, agent, owner, conversation_id, ttl)
    if started.outcome == "started":
        if new:
            await bind_agent(redis, conversation_id, agent)
        await remember_run_trace(redis, conversation_id, started.run_id)
        try:
            await client.signal_entity(
                df.EntityId(agent, conversation_id),
                RUN_OPERATION,
                # Always an object: signal_entity drops falsy inputs.
                {
                    "run_id": started.run_id,
                    "message": message,
                    # What START wrote: the entity writes it again if a failover lost it.
                    "queued": started.queued.to_payload() if started.queued else None,
                    **telemetry.run_carrier(),
                },
            )
        except Exception as exc:  # noqa: BLE001 - any signalling failure is a 503
            logger.error("signalling the entity failed: %s", type(exc).__name__)
            await control.fail_queued_run(
                redis,
                conversation_id,
                started.run_id,
                idempotency_key=key,
                code="not_started",
                message="The run could not be started. Please try again.",
                limits=_limits(settings),
            )
            raise _durable_unavailable("The agent could not be started.") from None
    return started


@observed
@json_errors
@authenticated
async def stream(req: Request) -> Response:
    """``GET .../stream``: the events after the cursor, live, until the run's terminal event."""
    settings = get_settings()
    agent = validation.agent_name(req)
    conversation_id = validation.conversation_id(req)
    media_type = negotiate(req.headers.get("accept"))
    if media_type is None:
        raise ApiError(
            406, "not_acceptable", "Accept text/event-stream, application/x-ndjson or text/plain."
        )
    try:
        cursor = parse_cursor(req.query_params.get("cursor"), req.headers.get("last-event-id"))
    except MalformedCursor:
        if req.headers.get("last-event-id"):
            raise ApiError(
                400,
                "invalid_cursor",
                "Last-Event-ID must be 0 or an event id, such as 1795602704818-0.",
            ) from None
        raise ApiError(
            400, "invalid_cursor", "The cursor must be 0 or an event id, such as 1795602704818-0."
        ) from None
    redis = async_redis(settings)
    limits = _limits(settings)
    await _require_owner(req, redis, conversation_id)
    # A run whose worker is gone is ended now, so this reader gets its terminal event.
    await control.end_stale_run(redis, conversation_id, limits)
    slot = await callers.stream_slot(req, redis)
    try:
        opened = await slot.guard(
            open_stream(
                reader_redis(settings),
                conversation_id,
                cursor,
                keepalive_seconds=settings.keepalive_seconds,
                max_seconds=settings.max_stream_seconds,
                hub=stream_hub(settings) if settings.pools.hub else None,
                fallback=blocking_reader_redis(settings),
                slots=reader_slots(settings.pools.max_readers),
                requeue_window_seconds=settings.run_start_deadline_seconds,
            )
        )
    except ConversationNotFound:
        if await control.conversation_exists(redis, conversation_id):
            # The stream expired but the conversation lives on: nothing to deliver.
            return Response(status_code=204, headers=STREAM_HEADERS)
        raise _conversation_not_found() from None
    except CursorTrimmed:
        raise ApiError(
            410,
            "cursor_trimmed",
            "Events after this cursor are no longer kept; start again from the "
            "conversation's status.",
        ) from None
    except CursorBeyondEnd:
        raise ApiError(
            400,
            "cursor_beyond_end",
            "The cursor is later than the newest event of this stream; use an event id it sent.",
        ) from None
    except NothingToDeliver:
        return Response(status_code=204, headers=STREAM_HEADERS)
    fmt = stream_format(media_type, settings.sse_retry_ms)
    observation = await observe_stream(redis, agent, conversation_id)

    def ended() -> None:
        slot.release()
        if observation is not None:
            observation.ended(response)

    response = EventStreamResponse(
        opened,
        fmt,
        _lease_check(redis, conversation_id, limits),
        on_end=ended,
        on_batch=observation.batch_sent if observation is not None else None,
        on_gone=functools.partial(control.deletion_event, redis, conversation_id),
    )
    return response


def _lease_check(
    redis: aioredis.Redis, conversation_id: str, limits: control.Limits
) -> Callable[[], Awaitable[bool]]:
    """What a reader does on each keep-alive tick: end the run if its worker is gone.

    Returns False when the stream itself is gone (the conversation was deleted or expired).
    """
    return functools.partial(control.end_stale_run, redis, conversation_id, limits)


@observed
@json_errors
@authenticated
async def status(req: Request) -> Response:
    """``GET /api/agents/{agent}/conversations/{cid}``."""
    settings = get_settings()
    agent = validation.agent_name(req)
    conversation_id = validation.conversation_id(req)
    await _require_owner(req, async_redis(settings), conversation_id)
    await _check_agent(settings, conversation_id, agent)
    found = await control.conversation_status(
        async_redis(settings), conversation_id, _limits(settings)
    )
    if found is None:
        raise _conversation_not_found()
    body: dict[str, Any] = {
        "conversation_id": conversation_id,
        "entity_id": entity_instance_id(agent, conversation_id),
        **found,
        "stream_url": f"{_conversation_path(agent, conversation_id)}/stream",
    }
    return JSONResponse(body)


@observed
@json_errors
@authenticated
async def cancel(req: Request) -> Response:
    """``POST .../runs/{run_id}/cancel``: best effort; the run ends with ``run.cancelled``."""
    settings = get_settings()
    agent = validation.agent_name(req)
    conversation_id = validation.conversation_id(req)
    run_id = validation.run_id(req)
    await _require_owner(req, async_redis(settings), conversation_id, _run_not_found())
    await _check_agent(settings, conversation_id, agent, _run_not_found())
    found = await control.request_cancel(
        async_redis(settings), conversation_id, run_id, _limits(settings)
    )
    if found is None:
        raise _run_not_found()
    if found in FINISHED_STATUSES:
        raise ApiError(409, "run_finished", f"The run already ended ({found}).", run_status=found)
    # "ended": the run's worker was gone, so this request wrote its run.cancelled itself.
    status_now = "cancelled" if found == "ended" else "cancel_requested"
    return JSONResponse(
        {"conversation_id": conversation_id, "run_id": run_id, "status": status_now},
        status_code=202,
    )


@observed
@json_errors
@authenticated
async def delete(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """``DELETE /api/agents/{agent}/conversations/{cid}``: the stream, records and entity state.

    The entity is told first (its state goes when its queued operations are done), so a failed
    signal leaves everything in place for the client's retry; then an active run is ended with
    ``run.cancelled`` and the keys are removed.
    """
    settings = get_settings()
    agent = validation.agent_name(req)
    conversation_id = validation.conversation_id(req)
    redis = async_redis(settings)
    await _require_owner(req, redis, conversation_id)
    await _check_agent(settings, conversation_id, agent)
    if not await control.conversation_exists(redis, conversation_id):
        raise _conversation_not_found()
    try:
        await client.signal_entity(
            df.EntityId(agent, conversation_id), DELETE_OPERATION, {"reason": "deleted"}
        )
    except Exception as exc:  # noqa: BLE001 - any signalling failure is a 503
        logger.error("signalling the entity failed: %s", type(exc).__name__)
        raise _durable_unavailable("The conversation could not be deleted.") from None
    if not await control.delete_conversation(redis, conversation_id, _limits(settings)):
        raise _conversation_not_found()
    await owners.forget(redis, agent, caller_of(req).owner, conversation_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@observed
@json_errors
@authenticated
async def list_conversations(req: Request) -> Response:
    """``GET /api/agents/{agent}/conversations``: the caller's own, newest first, paginated."""
    settings = get_settings()
    agent = validation.agent_name(req)
    limit = validation.page_limit(req)
    after = None
    raw_cursor = req.query_params.get("cursor")
    if raw_cursor is not None:
        after = owners.parse_page_cursor(raw_cursor)
        if after is None:
            raise ApiError(400, "invalid_cursor", "Pass the next_cursor of the previous page.")
    page = await owners.list_owned(async_redis(settings), agent, caller_of(req).owner, limit, after)
    conversations = [
        {
            **entry,
            "entity_id": entity_instance_id(agent, str(entry["conversation_id"])),
            "status_url": _conversation_path(agent, str(entry["conversation_id"])),
        }
        for entry in page.conversations
    ]
    return JSONResponse(
        {"conversations": conversations, "next_cursor": page.next_cursor},
        headers={"Cache-Control": "no-store"},
    )


@functools.cache
def _page_html() -> str:
    return resources.files("agentstream.web").joinpath("index.html").read_text(encoding="utf-8")


@observed
async def page(req: Request) -> Response:
    """``GET /api/ui``: the browser client (one static page, no build step, no CDN)."""
    return HTMLResponse(_page_html(), headers={"Cache-Control": "no-cache"})


@observed
async def health(req: Request) -> Response:
    """``GET /api/health``: Redis reachable and settings sane, the model's reachability as
    information; never shows a secret."""
    try:
        settings = get_settings()
    except Exception as exc:  # noqa: BLE001 - a ConfigError names the setting
        return JSONResponse({"status": "unhealthy", "settings": str(exc)}, status_code=503)
    try:
        await asyncio.wait_for(async_redis(settings).ping(), timeout=5)
        redis_state = "ok"
    except AtCapacity:
        # Every request connection of this worker is in use: it is busy, not down. A 503 here
        # could make a platform's probe recycle an instance that is only working hard.
        redis_state = "busy"
    except Exception as exc:  # noqa: BLE001 - any other failure means unhealthy
        redis_state = f"unreachable ({type(exc).__name__})"
    healthy = redis_state in ("ok", "busy")
    slots = reader_slots(settings.pools.max_readers)
    busy = redis_state == "busy" or slots.in_use >= slots.limit
    return JSONResponse(
        {
            "status": ("busy" if busy else "ok") if healthy else "unhealthy",
            "redis": redis_state,
            "model": await model_status(settings.model),  # informative: never makes it 503
            "settings": settings.describe(),
        },
        status_code=200 if healthy else 503,
        headers={"Cache-Control": "no-store"},
    )


@observed
@json_errors
@authenticated
async def list_agents(req: Request) -> Response:
    """``GET /api/agents``: the app's agents (name, description, kind), as declared."""
    agents = [
        {"name": info.name, "description": info.description, "kind": info.kind}
        for info in registered_agents()
    ]
    return JSONResponse({"agents": agents}, headers={"Cache-Control": "no-store"})


@observed
@json_errors
@authenticated
async def conversation_messages(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """``GET .../conversations/{cid}/messages``: the turns the conversation's history keeps, as
    JSON, newest last, ``limit`` at a time; ``next_cursor`` pages back to older turns. A run in
    progress is not among them until it completes."""
    settings = get_settings()
    agent = validation.agent_name(req)
    conversation_id = validation.conversation_id(req)
    limit = validation.page_limit(req)
    before = validation.turn_cursor(req)
    redis = async_redis(settings)
    await _require_owner(req, redis, conversation_id)
    await _check_agent(settings, conversation_id, agent)
    if not await control.conversation_exists(redis, conversation_id):
        raise _conversation_not_found()
    try:
        found = await client.read_entity_state(df.EntityId(agent, conversation_id))
    except Exception as exc:  # noqa: BLE001 - any failure to read is a 503
        logger.error("reading the entity's state failed: %s", type(exc).__name__)
        raise _durable_unavailable("The conversation's messages could not be read.") from None
    raw = found.entity_state if found.entity_exists else None
    state = json.loads(raw) if isinstance(raw, str) else raw
    # A run's turn reaches the entity's state after its terminal event: add what is not there yet.
    committed = runs_in_state(state, FINISHED_STATUSES)
    pending = await control.turns_not_in_state(redis, conversation_id, committed)
    turns = turns_of([*history_of(state), *pending])
    end = len(turns) if before is None else min(before, len(turns))
    start = max(0, end - limit)
    return JSONResponse(
        {
            "conversation_id": conversation_id,
            "agent": agent,
            "turns": turns[start:end],
            "next_cursor": str(start) if start > 0 else None,
        },
        headers={"Cache-Control": "no-store"},
    )
