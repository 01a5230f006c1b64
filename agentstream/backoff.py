"""The project's one retry-delay policy: capped exponential backoff with jitter.

Every retry loop takes its waits from here: the entity's writer retrying through Redis blips
(:mod:`.streamlog.retry`), the asyncio Redis clients' command retries (:mod:`.redis_clients`,
through redis-py's retry hook) and the console client reconnecting to the app. They differ only
in where the waits start and where they stop growing.

Each wait is drawn between half and all of its exponential step, so clients that failed together
(an instance restarted under a thousand readers) do not all come back at the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from redis.backoff import AbstractBackoff


@dataclass(frozen=True)
class Backoff:
    """Waits of ``first``, twice that, four times, ... up to ``cap`` seconds, each jittered."""

    first: float
    cap: float

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failed attempts in a row (1 after the first failure)."""
        step = min(self.cap, self.first * 2 ** max(0, failures - 1))
        return step * random.uniform(0.5, 1.0)


class RedisBackoff(AbstractBackoff):
    """A :class:`Backoff` as redis-py's retry hook (``Retry(RedisBackoff(...), retries)``)."""

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy

    def compute(self, failures: int) -> float:
        return self.policy.delay(failures)


# A request command (POST, status, a reader's read): two quick retries, so an outage is a fast 503.
REDIS_COMMAND = Backoff(first=0.05, cap=0.5)
# The entity's writes, retried for REDIS_RETRY_SECONDS through a restart or failover.
REDIS_WRITE = Backoff(first=0.05, cap=1.0)
# The console client reconnecting to the app (each wait is shown to the user).
RECONNECT = Backoff(first=0.25, cap=8.0)
