"""The caller of each request, established before its handler runs (see :mod:`agentstream.auth`),
and the caller's limits (see :mod:`agentstream.limits`) as HTTP answers."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec

import redis.asyncio as aioredis
from fastapi import Request, Response

from .. import limits, telemetry
from ..auth import Caller, CredentialsUnavailable, Unauthenticated, identify
from ..config import get_settings
from ..streamlog import control
from .errors import ApiError, error_response

P = ParamSpec("P")

_CHALLENGE = 'Bearer realm="agentstream"'


def authenticated(
    handler: Callable[Concatenate[Request, P], Awaitable[Response]],
) -> Callable[Concatenate[Request, P], Awaitable[Response]]:
    """Establish the caller (:func:`caller_of`) before the handler runs; without one, ``401``
    with ``WWW-Authenticate`` (RFC 6750) and the JSON error, and nothing else."""

    @functools.wraps(handler)
    async def wrapper(request: Request, /, *args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            request.state.caller = await identify(request, get_settings().auth)
        except Unauthenticated as exc:
            response = error_response(401, "unauthenticated", exc.message)
            challenge = f'{_CHALLENGE}, error="invalid_token"' if exc.invalid else _CHALLENGE
            response.headers["WWW-Authenticate"] = challenge
            return response
        except CredentialsUnavailable:
            return error_response(
                503, "auth_unavailable", "Credentials cannot be checked right now."
            )
        return await handler(request, *args, **kwargs)

    return wrapper


def caller_of(request: Request) -> Caller:
    return request.state.caller


_LIMIT_MESSAGES = {
    "active_runs": "Too many runs in progress for this caller",
    "runs_per_minute": "Too many new runs this minute for this caller",
    "open_streams": "Too many open streams for this caller",
}


async def admit_run(
    request: Request,
    redis: aioredis.Redis,
    conversation_id: str,
    run_id: str,
    idempotency_key: str | None,
) -> limits.RunAdmission:
    """Count a new run against the caller's limits; ``429`` with ``Retry-After`` when over one."""
    settings = get_settings()
    try:
        return await limits.admit_run(
            redis,
            settings.caller_limits,
            caller_of(request).limit_key,
            conversation_id,
            run_id,
            control.Limits.from_settings(settings),
            idempotency_key,
        )
    except limits.OverLimit as exc:
        raise _over_limit(exc) from None


async def stream_slot(request: Request, redis: aioredis.Redis) -> limits.StreamSlot:
    """One of the caller's open-stream slots; ``429`` with ``Retry-After`` when none is free."""
    settings = get_settings()
    try:
        return await limits.open_stream_slot(
            redis, settings.caller_limits, caller_of(request).limit_key, settings.max_stream_seconds
        )
    except limits.OverLimit as exc:
        raise _over_limit(exc) from None


def _over_limit(exc: limits.OverLimit) -> ApiError:
    telemetry.limit_rejections.add(1, {"agentstream.limit": exc.limit})
    return ApiError(
        429,
        "limit_exceeded",
        f"{_LIMIT_MESSAGES[exc.limit]} (at most {exc.maximum}); retry after {exc.retry_after} s.",
        limit=exc.limit,
        retry_after=exc.retry_after,
    )
