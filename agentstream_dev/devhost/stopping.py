"""Ctrl-C on the development host: the agent runs in flight end as ``run.cancelled``.

The host cancels them through the API's own run control (the run's cancel flag, which the
run's writer sees at its next write or heartbeat), then gives them a moment to write their
terminal event. A run that does not end in that time is left to its lease: the next reader
ends it as ``worker_lost``.
"""

from __future__ import annotations

import json
import logging

import redis.exceptions

from agentstream.config import get_settings
from agentstream.entity_protocol import RUN_OPERATION
from agentstream.redis_clients import async_redis
from agentstream.streamlog import control

from .entities import Operation

logger = logging.getLogger(__name__)


async def cancel_runs(in_flight: list[tuple[str, str, Operation]]) -> int:
    """Set the cancel flag of every run operation in flight (every entity is an agent's); how
    many were asked to stop."""
    runs = [
        (key, run_id)
        for _, key, operation in in_flight
        if operation.name == RUN_OPERATION and (run_id := _run_id(operation.input))
    ]
    if not runs:
        return 0
    settings = get_settings()
    limits = control.Limits.from_settings(settings)
    asked = 0
    for conversation_id, run_id in runs:
        try:
            await control.request_cancel(async_redis(settings), conversation_id, run_id, limits)
            asked += 1
        except redis.exceptions.RedisError as exc:
            logger.warning("stopping: run %s left to its lease (%s)", run_id, type(exc).__name__)
    return asked


def _run_id(body: str | None) -> str | None:
    """The run id in a run operation's input: the SDK posts its JSON as a JSON string."""
    try:
        payload = json.loads(body or "null")
        if isinstance(payload, str):
            payload = json.loads(payload)
    except ValueError:
        return None
    run_id = payload.get("run_id") if isinstance(payload, dict) else None
    return run_id if isinstance(run_id, str) else None
