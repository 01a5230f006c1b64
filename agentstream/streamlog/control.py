"""Run control for the HTTP side: start a run (lock + ``run.queued``), cancel it, read status.

Everything here is asynchronous (the HTTP functions run on the worker's event loop) and each
operation is one atomic script or one round trip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ..events import RUN_FAILED, TERMINAL_TYPES, dumps_line
from . import scripts
from .keys import meta_key, stream_key
from .writer import append_args

_GLOBAL_IDEMPOTENCY_PREFIX = "agent-idem:"


@dataclass(frozen=True)
class RunStart:
    """The outcome of :func:`start_run`."""

    outcome: str  # "started" | "duplicate" | "busy" | "unknown"
    run_id: str | None = None
    cursor: str | None = None


async def start_run(
    client: aioredis.Redis,
    conversation_id: str,
    run_id: str,
    message: str,
    *,
    idempotency_key: str | None,
    must_exist: bool,
    ttl_seconds: int,
    maxlen: int,
) -> RunStart:
    """Take the conversation's run lock and write ``run.queued``, atomically."""
    script = client.register_script(scripts.START)
    reply = await script(
        keys=[stream_key(conversation_id), meta_key(conversation_id)],
        args=[
            run_id,
            idempotency_key or "",
            dumps_line({"message": message}),
            int(time.time() * 1000),
            ttl_seconds * 1000,
            maxlen,
            "1" if must_exist else "0",
        ],
    )
    outcome = reply[0]
    if outcome == "started":
        return RunStart("started", run_id, reply[1])
    if outcome == "duplicate":
        return RunStart("duplicate", reply[1], reply[2])
    if outcome == "busy":
        return RunStart("busy", reply[1])
    return RunStart("unknown")


async def claim_new_conversation(
    client: aioredis.Redis, idempotency_key: str, conversation_id: str, ttl_seconds: int
) -> str:
    """The conversation an ``Idempotency-Key`` on the new-conversation route belongs to.

    The first request with a key claims it for its freshly made conversation id; a retry gets
    that same id back, and then :func:`start_run` finds the key there and returns the same run.
    """
    key = _GLOBAL_IDEMPOTENCY_PREFIX + idempotency_key
    # Two steps rather than SET NX GET, which needs Redis 7.
    if await client.set(key, conversation_id, nx=True, ex=ttl_seconds):
        return conversation_id
    return await client.get(key) or conversation_id


async def fail_queued_run(
    client: aioredis.Redis,
    conversation_id: str,
    run_id: str,
    *,
    idempotency_key: str | None,
    code: str,
    message: str,
    ttl_seconds: int,
    maxlen: int,
) -> None:
    """End a run that never reached the entity (its signal failed) and release the lock.

    The idempotency key is forgotten too, so the client's retry starts a fresh run.
    """
    if idempotency_key is not None:
        await client.hdel(meta_key(conversation_id), f"idem:{idempotency_key}")
    script = client.register_script(scripts.APPEND)
    await script(
        keys=[stream_key(conversation_id), meta_key(conversation_id)],
        args=append_args(
            run_id, RUN_FAILED, {"code": code, "message": message}, ttl_seconds * 1000, maxlen
        ),
    )


async def request_cancel(client: aioredis.Redis, conversation_id: str, run_id: str) -> str | None:
    """Set the run's cancel flag if it is still going; return its status (None: unknown run)."""
    script = client.register_script(scripts.CANCEL)
    status = await script(
        keys=[stream_key(conversation_id), meta_key(conversation_id)], args=[run_id]
    )
    return status or None


async def conversation_status(
    client: aioredis.Redis, conversation_id: str
) -> dict[str, Any] | None:
    """The conversation's runs and where its stream stands; None when it does not exist."""
    skey, mkey = stream_key(conversation_id), meta_key(conversation_id)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(mkey)
        pipe.xrevrange(skey, count=1)
        pipe.pttl(skey)
        meta, last, ttl_ms = await pipe.execute()
    if not meta or not last:
        return None
    runs = []
    for field, status in meta.items():
        if not field.startswith("status:"):
            continue
        run_id = field.removeprefix("status:")
        runs.append(
            {
                "run_id": run_id,
                "status": status,
                "created_ms": int(meta.get(f"created:{run_id}", 0)),
                "attempts": int(meta.get(f"attempts:{run_id}", 0)),
                "cancel_requested": f"cancel:{run_id}" in meta,
            }
        )
    runs.sort(key=lambda run: run["created_ms"])
    last_id, last_fields = last[0]
    return {
        "active_run": meta.get("active_run"),
        "latest_run": meta.get("latest_run"),
        "latest_run_cursor": meta.get("latest_start"),
        "last_event": {
            "id": last_id,
            "type": last_fields.get("type"),
            "terminal": last_fields.get("type") in TERMINAL_TYPES,
        },
        "expires_in_seconds": max(0, ttl_ms // 1000) if ttl_ms and ttl_ms > 0 else None,
        "runs": runs,
    }
