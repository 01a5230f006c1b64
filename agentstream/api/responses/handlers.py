"""The OpenAI Responses-compatible routes under ``/api/v1``: the official SDK as a client.

``POST /responses`` starts a run of the agent named by ``model`` (in a new conversation, or the
next turn of one); ``GET /responses/{id}`` is the Response or, with ``stream=true``, its events
after ``starting_after``; ``POST /responses/{id}/cancel`` cancels; ``GET /models`` lists the
agents. Every Response and event comes from the run's stored events through
:mod:`.translate`, so live and late readers get the same events and sequence numbers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec

import azure.durable_functions as df
import redis.asyncio as aioredis
import redis.exceptions
from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from ...agents.registry import registered_agents as declared_agents
from ...config import Settings, get_settings
from ...events import Event, dumps_line, sse_keepalive
from ...redis_clients import (
    async_redis,
    blocking_reader_redis,
    reader_redis,
    stream_hub,
)
from ...streamlog import control, owners, run_records
from ...streamlog.agent_binding import belongs_to
from ...streamlog.capacity import AtCapacity
from ...streamlog.cursor import Cursor
from ...streamlog.keys import stream_id_before, stream_key
from ...streamlog.reader import (
    ConversationNotFound,
    CursorTrimmed,
    NothingToDeliver,
    open_stream,
    reader_slots,
)
from .. import callers, validation
from ..callers import authenticated, caller_of
from ..errors import ApiError, json_errors
from ..handlers import RunRequest, begin_run
from ..observed import observed
from ..streaming import STREAM_HEADERS
from . import records
from .requests import (
    CreateRequest,
    create_request,
    previous_not_found,
    response_not_found,
    run_of,
    starting_after,
    stream_flag,
)
from .translate import (
    BrokenRun,
    ResponseMeta,
    Translator,
    recorded_response,
    response_id,
    translate,
)

logger = logging.getLogger(__name__)

P = ParamSpec("P")

# How long a cancel waits for the run's end before answering with the Response as it stands.
CANCEL_WAIT_SECONDS = 5.0
KEEPALIVE = sse_keepalive().encode()


def registered_agents() -> list[str]:
    """The agents a client can name as ``model``."""
    return [info.name for info in declared_agents()]


def openai_errors(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """Errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.

    The project's own error handling decides status and code; this only reshapes the body. A
    ``409`` says ``x-should-retry: false``: the SDK would otherwise retry it by itself.
    """
    with_errors = json_errors(handler)

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        response = await with_errors(*args, **kwargs)
        if response.status_code < 400 or not isinstance(response, JSONResponse):
            return response
        error = json.loads(bytes(response.body))["error"]
        body = {
            "error": {
                "message": error["message"],
                "type": _error_type(response.status_code),
                "param": error.get("param"),
                "code": error["code"],
            }
        }
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-length", "content-type")
        }
        if response.status_code == 409:
            headers["x-should-retry"] = "false"
        return JSONResponse(body, status_code=response.status_code, headers=headers)

    return wrapper


def _error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return {401: "authentication_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error"
    )


@observed
@openai_errors
@authenticated
async def list_models(req: Request) -> Response:
    """``GET /api/v1/models``: the registered agents, as models."""
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "agentstream"}
                for name in registered_agents()
            ],
        }
    )


@observed
@openai_errors
@authenticated
async def create(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """``POST /api/v1/responses``."""
    settings = get_settings()
    request = await create_request(req, registered_agents(), settings.max_message_chars)
    key = validation.idempotency_key(req)
    owner = caller_of(req).owner
    redis = async_redis(settings)
    conversation_id = await _continued_conversation(redis, request, owner)
    new = conversation_id is None
    if conversation_id is None:
        conversation_id = uuid.uuid4().hex
        if key is not None:
            claimed = await control.claim_new_conversation(
                redis, key, request.message, conversation_id, settings.stream_ttl_seconds, owner
            )
            if claimed is None:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    "This Idempotency-Key was already used for a different request.",
                )
            conversation_id = claimed
    run = RunRequest(request.model, conversation_id, request.message, key, new)
    started = await begin_run(settings, client, req, run)
    assert started.run_id is not None and started.cursor is not None
    meta = ResponseMeta(
        run_id=started.run_id,
        conversation_id=conversation_id,
        model=request.model,
        background=request.background,
        previous_response_id=(
            response_id(request.previous_response_id) if request.previous_response_id else None
        ),
    )
    await records.save(redis, meta, started.cursor, settings.conversation_ttl_seconds)
    record = records.ResponseRecord(meta, started.cursor)
    if request.stream:
        return await _stream(settings, req, record, after=-1)
    if request.background:
        return JSONResponse(await _current(settings, record))
    return JSONResponse(await _awaited(settings, req, record, settings.max_stream_seconds))


async def _continued_conversation(
    redis: aioredis.Redis, request: CreateRequest, owner: str
) -> str | None:
    """The conversation a create continues (``previous_response_id`` or ``conversation``)."""
    if request.previous_response_id is None:
        conversation_id = request.conversation_id
        if conversation_id is not None and not await _accessible(
            redis, conversation_id, owner, request.model
        ):
            raise ApiError(404, "conversation_not_found", "No such conversation, or it expired.")
        return conversation_id
    shown = response_id(request.previous_response_id)
    previous = await records.load(redis, request.previous_response_id)
    if previous is None or not await _accessible(
        redis, previous.meta.conversation_id, owner, previous.meta.model
    ):
        raise previous_not_found(shown)
    if previous.meta.model != request.model:
        raise ApiError(
            400,
            "model_mismatch",
            f"{shown} belongs to the model {previous.meta.model!r}; continue it with that model.",
            param="model",
        )
    latest = await records.latest(redis, previous.meta.conversation_id)
    if latest != request.previous_response_id:
        raise ApiError(
            400,
            "previous_response_not_latest",
            f"Only the latest response of a conversation can be continued; {shown} is not.",
            param="previous_response_id",
        )
    return previous.meta.conversation_id


async def _accessible(redis: aioredis.Redis, conversation_id: str, owner: str, agent: str) -> bool:
    """The caller's own conversation of this agent. Without caller identities
    (``AUTH_MODE=key``) every caller shares one owner."""
    if owner and not await owners.owns(redis, conversation_id, owner):
        return False
    return await belongs_to(redis, conversation_id, agent)


@observed
@openai_errors
@authenticated
async def retrieve(req: Request) -> Response:
    """``GET /api/v1/responses/{response_id}``, with ``stream=true`` its events."""
    settings = get_settings()
    streaming, after = stream_flag(req), starting_after(req)
    record = await _record(settings, req)
    if streaming:
        return await _stream(settings, req, record, after)
    return JSONResponse(await _current(settings, record))


@observed
@openai_errors
@authenticated
async def cancel(req: Request) -> Response:
    """``POST /api/v1/responses/{response_id}/cancel``: the Response once the run ended.

    Idempotent: a finished response is returned as it is.
    """
    settings = get_settings()
    record = await _record(settings, req)
    finished = await _finished(settings, record)
    if finished is not None:
        return JSONResponse(finished)
    meta = record.meta
    await control.request_cancel(
        async_redis(settings), meta.conversation_id, meta.run_id, _limits(settings)
    )
    return JSONResponse(await _awaited(settings, req, record, CANCEL_WAIT_SECONDS))


async def _record(settings: Settings, req: Request) -> records.ResponseRecord:
    redis = async_redis(settings)
    record = await records.load(redis, run_of(req.path_params.get("response_id", "")))
    if (
        record is None
        # A deleted conversation takes its responses with it; another caller's are unknown.
        or not await control.conversation_exists(redis, record.meta.conversation_id)
        or not await _accessible(
            redis, record.meta.conversation_id, caller_of(req).owner, record.meta.model
        )
    ):
        raise response_not_found()
    return record


def _limits(settings: Settings) -> control.Limits:
    return control.Limits.from_settings(settings)


async def _finished(settings: Settings, record: records.ResponseRecord) -> dict[str, Any] | None:
    """The Response from the run's record, once the run ended (the record outlives the stream)."""
    meta = record.meta
    kept = await run_records.load(async_redis(settings), meta.conversation_id, meta.run_id)
    return None if kept is None else recorded_response(meta, kept)


async def _current(settings: Settings, record: records.ResponseRecord) -> dict[str, Any]:
    """The Response as its stored events stand now (non-blocking)."""
    finished = await _finished(settings, record)
    if finished is not None:
        return finished
    meta = record.meta
    await control.end_stale_run(async_redis(settings), meta.conversation_id, _limits(settings))
    events = await _stored_events(reader_redis(settings), meta, record.start_id)
    if events is None:
        raise await _expired(settings, record)
    try:
        _, translator = translate(meta, events)
    except BrokenRun:
        raise await _expired(settings, record) from None
    return translator.response()


async def _stored_events(
    client: aioredis.Redis, meta: ResponseMeta, start_id: str
) -> list[Event] | None:
    """The run's events so far; None when its start is no longer in the stream."""
    key, after = stream_key(meta.conversation_id), stream_id_before(start_id)
    events: list[Event] = []
    while True:
        reply = await client.xread({key: after}, count=500)
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            event = Event.from_entry(entry_id, fields)
            if not events and (event.id != start_id or event.run != meta.run_id):
                return None
            events.append(event)
            if event.is_terminal:
                return events
        if len(entries) < 500:
            return events or None
        after = events[-1].id


async def _expired(settings: Settings, record: records.ResponseRecord) -> ApiError:
    """The run's events are gone from the stream (it expired or was trimmed): a finished run
    still has its record, which serves the Response but not its events."""
    if await _finished(settings, record) is not None:
        return ApiError(
            400,
            "response_stream_expired",
            "This response's event stream has expired; retrieve it without stream=true.",
            param="stream",
        )
    return ApiError(404, "response_expired", "This response's events expired before it ended.")


async def _awaited(
    settings: Settings, req: Request, record: records.ResponseRecord, max_seconds: float
) -> dict[str, Any]:
    """The Response once the run ended, or as it stands after ``max_seconds``."""
    deadline = time.monotonic() + max_seconds
    translator = Translator(record.meta)
    async with contextlib.aclosing(_live_events(settings, req, record, max_seconds)) as batches:
        async for events in batches:
            try:
                for event in events:
                    translator.feed(event)
            except BrokenRun:
                raise await _expired(settings, record) from None
            if translator.finished or time.monotonic() >= deadline:
                break
    return translator.response()


async def _live_events(
    settings: Settings, req: Request, record: records.ResponseRecord, max_seconds: float
) -> AsyncGenerator[list[Event], None]:
    """The run's events from its first, live until its end (an empty list on each idle tick).

    Reading holds one of the caller's open-stream slots (``429`` when none is free).
    """
    redis = async_redis(settings)
    meta = record.meta
    limits = _limits(settings)
    await control.end_stale_run(redis, meta.conversation_id, limits)
    slot = await callers.stream_slot(req, redis)
    try:
        opened = await slot.guard(
            open_stream(
                reader_redis(settings),
                meta.conversation_id,
                Cursor(stream_id_before(record.start_id)),
                keepalive_seconds=settings.keepalive_seconds,
                max_seconds=max_seconds,
                hub=stream_hub(settings) if settings.pools.hub else None,
                fallback=blocking_reader_redis(settings),
                slots=reader_slots(settings.pools.max_readers),
            )
        )
    except (ConversationNotFound, CursorTrimmed, NothingToDeliver):
        raise await _expired(settings, record) from None
    try:
        async with contextlib.aclosing(opened.batches()) as batches:
            started = False
            async for batch in batches:
                if batch and not started:
                    # The stream expired and a new one began: the run's first event is gone.
                    if batch[0].id != record.start_id:
                        raise await _expired(settings, record)
                    started = True
                if batch is None:
                    # An idle tick ends a run whose worker is gone, as on the native stream.
                    if not await control.end_stale_run(redis, meta.conversation_id, limits):
                        return
                    yield []
                else:
                    yield batch
    finally:
        slot.release()


async def _stream(
    settings: Settings, req: Request, record: records.ResponseRecord, after: int
) -> Response:
    """``200`` SSE: the events with a sequence number after ``after``, live, to the end."""
    batches = _live_events(settings, req, record, settings.max_stream_seconds)
    # The first batch is read before answering, so an expired stream is still a clean 400.
    try:
        first = await anext(batches)
    except StopAsyncIteration:
        first = []
    return StreamingResponse(
        _sse(record.meta, first, batches, after),
        media_type="text/event-stream; charset=utf-8",
        headers=STREAM_HEADERS,
    )


async def _sse(
    meta: ResponseMeta,
    first: list[Event],
    batches: AsyncGenerator[list[Event], None],
    after: int,
) -> AsyncIterator[bytes]:
    """SSE frames with ``event:`` and ``data:`` only: the SDK's decoder takes no ``id:`` or
    ``retry:`` lines here, and keep-alives are comments."""
    translator = Translator(meta)

    def frames(events: list[Event]) -> bytes:
        out = []
        for event in events:
            for emitted in translator.feed(event):
                if emitted["sequence_number"] > after:
                    out.append(f"event: {emitted['type']}\ndata: {dumps_line(emitted)}\n\n")
        return "".join(out).encode()

    async with contextlib.aclosing(batches):  # however the response ends, the slot goes back
        try:
            if chunk := frames(first):
                yield chunk
            if not translator.finished:
                async for events in batches:
                    chunk = frames(events) if events else KEEPALIVE
                    if chunk:
                        yield chunk
                    if translator.finished:
                        break
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            AtCapacity,
        ) as exc:
            # The response has started; end it cleanly: the client resumes with starting_after.
            logger.warning("responses stream ended early: %s", type(exc).__name__)
        except BrokenRun:
            # The cap trimmed events this reader had not read: end rather than number wrongly;
            # a resumed read then says the events expired.
            logger.warning("responses stream ended: the stream's MAXLEN cap overtook the run")
