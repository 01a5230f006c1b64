"""The caller of each request, established before its handler runs (see :mod:`agentstream.auth`)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec

from fastapi import Request, Response

from ..auth import Caller, CredentialsUnavailable, Unauthenticated, identify
from ..config import get_settings
from .errors import error_response

P = ParamSpec("P")

_CHALLENGE = 'Bearer realm="agentstream"'


def authenticated(
    handler: Callable[Concatenate[Request, P], Awaitable[Response]],
) -> Callable[Concatenate[Request, P], Awaitable[Response]]:
    """Establish the caller (:func:`caller_of`) before the handler runs; without one, ``401``
    with ``WWW-Authenticate`` (RFC 6750) and the JSON error, and nothing else."""

    @functools.wraps(handler)
    async def wrapper(request: Request, *args: P.args, **kwargs: P.kwargs) -> Response:
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
