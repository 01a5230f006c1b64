"""Limits per caller, held in Redis so that every worker counts the same: active runs, new runs
per minute and open streams (``LIMIT_ACTIVE_RUNS``, ``LIMIT_RUNS_PER_MINUTE``,
``LIMIT_OPEN_STREAMS``; 0 turns one off).

Each caller has three sorted sets under one hash tag (one cluster slot, so one script checks and
takes a slot atomically):

- ``runs``: ``<conversation> <run>`` of the caller's runs that may still be going. Runs leave it
  when the caller's next start finds the set full and checks which of them have ended (ending a
  run whose worker is gone on the way, as every request that meets a conversation does).
- ``starts``: the runs started in the last 60 s (a sliding window; scores are start times).
- ``streams``: one member per open stream response, scored by when it is given up for lost (a
  response ends by itself after ``STREAM_MAX_SECONDS``, so a worker that died mid-stream never
  holds a slot for long); the response removes it when it ends.

Times come from the Redis server's clock, so the workers' clocks never need to agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis

from .config import CallerLimitSettings
from .streamlog import control
from .streamlog.control import registered_script
from .streamlog.keys import meta_key
from .streamlog.scripts import FINISHED_STATUSES

T = TypeVar("T")

# How long a caller over the active-runs or open-streams limit should wait before trying again:
# those slots free up when something ends, which no clock predicts.
BUSY_RETRY_AFTER_SECONDS = 5
WINDOW_MS = 60_000
_STREAM_GRACE_MS = 30_000
_RUNS_TTL_MS = 86_400_000

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: runs, starts. ARGV: max active (0 = off), max per minute (0 = off), member, run,
# busy retry seconds. Returns {'ok'} or {limit name, retry-after seconds}.
ADMIT_RUN = (
    _NOW
    + """
local runs, starts = KEYS[1], KEYS[2]
local max_active, max_rate = tonumber(ARGV[1]), tonumber(ARGV[2])
if max_rate > 0 then
  redis.call('ZREMRANGEBYSCORE', starts, '-inf', now - 60000)
  if redis.call('ZCARD', starts) >= max_rate then
    local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
    return {'runs_per_minute', math.max(1, math.ceil((tonumber(oldest[2]) + 60000 - now) / 1000))}
  end
end
if max_active > 0 and redis.call('ZCARD', runs) >= max_active then
  return {'active_runs', tonumber(ARGV[5])}
end
if max_rate > 0 then
  redis.call('ZADD', starts, now, ARGV[4])
  redis.call('PEXPIRE', starts, 60000)
end
if max_active > 0 then
  redis.call('ZADD', runs, now, ARGV[3])
  redis.call('PEXPIRE', runs, """
    + str(_RUNS_TTL_MS)
    + """)
end
return {'ok'}
"""
)

# KEYS: streams. ARGV: max open, member, hold ms, busy retry seconds.
OPEN_STREAM = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return {'open_streams', tonumber(ARGV[4])}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'ok'}
"""
)


class OverLimit(Exception):
    """The caller is at one of its limits; try again after ``retry_after`` seconds."""

    def __init__(self, limit: str, maximum: int, retry_after: int) -> None:
        super().__init__(limit)
        self.limit = limit
        self.maximum = maximum
        self.retry_after = retry_after


def _keys(limit_key: str) -> tuple[str, str, str]:
    tag = hashlib.sha256(limit_key.encode()).hexdigest()[:24]
    prefix = f"agent-limit:{{{tag}}}:"
    return prefix + "runs", prefix + "starts", prefix + "streams"


@dataclass(frozen=True)
class RunAdmission:
    """A run counted against its caller's limits; :meth:`release` when it did not start."""

    client: aioredis.Redis | None
    limit_key: str
    member: str
    run_id: str

    async def release(self) -> None:
        if self.client is None:
            return
        runs, starts, _ = _keys(self.limit_key)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(runs, self.member)
            pipe.zrem(starts, self.run_id)
            await pipe.execute()


async def admit_run(
    client: aioredis.Redis,
    limits: CallerLimitSettings,
    limit_key: str,
    conversation_id: str,
    run_id: str,
    run_limits: control.Limits,
    idempotency_key: str | None = None,
) -> RunAdmission:
    """Count a new run against the caller's limits, or raise :class:`OverLimit`.

    A retry with an ``Idempotency-Key`` the conversation already knows starts nothing (it gets
    the first answer back), so it is not counted, and not refused either.
    """
    not_counted = RunAdmission(None, limit_key, "", run_id)
    if not (limits.active_runs or limits.runs_per_minute):
        return not_counted
    if idempotency_key and await client.hexists(
        meta_key(conversation_id), f"idem:{idempotency_key}"
    ):
        return not_counted
    member = f"{conversation_id} {run_id}"
    runs, starts, _ = _keys(limit_key)
    args = [limits.active_runs, limits.runs_per_minute, member, run_id, BUSY_RETRY_AFTER_SECONDS]
    for attempt in range(2):
        reply = await registered_script(client, ADMIT_RUN)(keys=[runs, starts], args=args)
        if reply[0] == "ok":
            return RunAdmission(client, limit_key, member, run_id)
        if reply[0] != "active_runs" or attempt:
            break
        # The set may still hold runs that have ended since: drop them and look again.
        await _forget_ended_runs(client, runs, run_limits)
    maximum = limits.active_runs if reply[0] == "active_runs" else limits.runs_per_minute
    raise OverLimit(reply[0], maximum, int(reply[1]))


async def _forget_ended_runs(client: aioredis.Redis, runs: str, limits: control.Limits) -> None:
    ended = []
    for member in await client.zrange(runs, 0, -1):
        conversation_id, _, run_id = member.partition(" ")
        await control.end_stale_run(client, conversation_id, limits)
        status = await client.hget(meta_key(conversation_id), f"status:{run_id}")
        if status is None or status in FINISHED_STATUSES:
            ended.append(member)
    if ended:
        await client.zrem(runs, *ended)


# Releases in flight: a task is kept until it is done.
_releasing: set[asyncio.Task[None]] = set()


class StreamSlot:
    """One open stream counted against its caller's limit, held until the response ends."""

    def __init__(self, client: aioredis.Redis | None, limit_key: str) -> None:
        self._client = client
        self.key = _keys(limit_key)[2]
        self.member = uuid.uuid4().hex

    async def guard(self, opening: Awaitable[T]) -> T:
        """Await ``opening``; if it fails (nothing to stream), give the slot back at once."""
        try:
            return await opening
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._client is None:
            return
        # A task of its own: this may run while the response's task is being cancelled (the
        # client went away), when an await here would be cut short.
        task = asyncio.get_running_loop().create_task(self._remove(self._client))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)
        self._client = None

    async def _remove(self, client: aioredis.Redis) -> None:
        await client.zrem(self.key, self.member)


async def open_stream_slot(
    client: aioredis.Redis, limits: CallerLimitSettings, limit_key: str, max_stream_seconds: float
) -> StreamSlot:
    """Take one of the caller's open-stream slots, or raise :class:`OverLimit`."""
    if not limits.open_streams:
        return StreamSlot(None, limit_key)
    slot = StreamSlot(client, limit_key)
    hold_ms = int(max_stream_seconds * 1000) + _STREAM_GRACE_MS
    args = [limits.open_streams, slot.member, hold_ms, BUSY_RETRY_AFTER_SECONDS]
    reply = await registered_script(client, OPEN_STREAM)(keys=[slot.key], args=args)
    if reply[0] != "ok":
        raise OverLimit("open_streams", limits.open_streams, int(reply[1]))
    return slot
