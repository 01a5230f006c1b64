"""JSON error responses; nothing of an exception's text reaches a client."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

import redis.exceptions
from fastapi import Response
from fastapi.responses import JSONResponse

from ..config import ConfigError
from ..logs import log_internal_error
from ..streamlog.capacity import AtCapacity

logger = logging.getLogger(__name__)

P = ParamSpec("P")


# How long a client should wait before retrying a 503 (a Redis blip, a failover, a busy worker).
DEFAULT_RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: int = DEFAULT_RETRY_AFTER_SECONDS,
    **details: Any,
) -> JSONResponse:
    """The JSON error body; every ``429`` and ``503`` carries ``Retry-After`` (``retry_after``
    seconds)."""
    headers = {"Cache-Control": "no-store"}
    if status in (429, 503):
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(
        {"error": {"code": code, "message": message, **details}},
        status_code=status,
        headers=headers,
    )


def json_errors(
    handler: Callable[P, Awaitable[Response]],
) -> Callable[P, Awaitable[Response]]:
    """Turn every failure of a handler into a JSON error with the right status."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return await handler(*args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.details)
        except AtCapacity as exc:
            return error_response(
                503,
                "at_capacity",
                "This worker is busy. Please try again shortly.",
                retry_after=exc.retry_after_seconds,
            )
        except ConfigError as exc:
            # Configuration messages name a setting and never carry a secret.
            logger.error("configuration error: %s", exc)
            return error_response(503, "misconfigured", str(exc))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            logger.error("redis unavailable: %s", type(exc).__name__)
            return error_response(
                503,
                "redis_unavailable",
                "The stream store is unreachable. Please try again shortly.",
            )
        except Exception:  # noqa: BLE001 - the last line of defence
            log_internal_error(logger, "%s failed", handler.__name__)
            return error_response(
                500, "internal_error", "Something went wrong on our side. Please try again."
            )

    return wrapper
