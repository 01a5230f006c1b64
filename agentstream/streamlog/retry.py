"""Retrying Redis calls through blips: restarts, failovers, dropped connections.

Only calls that are safe to repeat go through here: the writer's scripts are idempotent (a replayed
append returns the entry already written), so a reply lost after Redis executed a command costs
nothing but a round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis.exceptions

from ..backoff import REDIS_WRITE, Backoff

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Connection errors and timeouts, LOADING (a restarted server reading its data: BusyLoadingError is
# a ConnectionError) and READONLY (a replica that was primary before a failover).
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
)


class StoreUnavailable(Exception):
    """Redis stayed unreachable for the whole retry budget."""


def call_with_retries(
    operation: Callable[[], T],
    budget_seconds: float,
    *,
    backoff: Backoff = REDIS_WRITE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``, retrying retryable errors with the writer's :data:`REDIS_WRITE` waits.

    Raises :class:`StoreUnavailable` once ``budget_seconds`` have passed without success.
    """
    deadline = clock() + budget_seconds
    attempts = 0
    while True:
        try:
            return operation()
        except RETRYABLE_ERRORS as exc:
            attempts += 1
            remaining = deadline - clock()
            if remaining <= 0:
                logger.error("redis unavailable after %d tries: %s", attempts, type(exc).__name__)
                raise StoreUnavailable() from None
            if attempts == 1:
                logger.warning("redis call failed (%s); retrying", type(exc).__name__)
            # Backoff between tries, not synchronisation: the server gives no "back" signal.
            sleep(min(remaining, backoff.delay(attempts)))
