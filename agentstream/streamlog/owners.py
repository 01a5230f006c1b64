"""Who a conversation belongs to, and each owner's list of conversations.

The owner is recorded in the conversation record (``owner``) by the ``START`` script when the
conversation is created. Each owner also has a sorted set of their conversation ids per agent,
scored by creation time (µs), for listing newest first; an entry whose record is gone (expired or
deleted) is dropped when a listing meets it. Without an identity (``AUTH_MODE=key``) the owner is
"" and every caller shares it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from .control import owner_scope
from .keys import conversation_key, meta_key

_INDEX_PREFIX = "agent-owned:"


def index_key(agent: str, owner: str) -> str:
    return f"{_INDEX_PREFIX}{agent}:{owner_scope(owner) or '-'}"


async def owns(client: aioredis.Redis, conversation_id: str, owner: str) -> bool:
    """Whether the conversation exists and belongs to ``owner``."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hget(conversation_key(conversation_id), "owner")
        pipe.exists(conversation_key(conversation_id), meta_key(conversation_id))
        recorded, exists = await pipe.execute()
    return bool(exists) and (recorded or "") == owner


async def remember(
    client: aioredis.Redis, agent: str, owner: str, conversation_id: str, ttl_seconds: int
) -> None:
    """Add a new conversation to its owner's list (which lives as long as its newest entry)."""
    key = index_key(agent, owner)
    async with client.pipeline(transaction=False) as pipe:
        # Microseconds: conversations started in the same millisecond still list in order.
        pipe.zadd(key, {conversation_id: time.time_ns() // 1000})
        pipe.expire(key, ttl_seconds)
        await pipe.execute()


async def forget(client: aioredis.Redis, agent: str, owner: str, conversation_id: str) -> None:
    await client.zrem(index_key(agent, owner), conversation_id)


@dataclass(frozen=True)
class Page:
    conversations: list[dict[str, int | str]]
    next_cursor: str | None


def parse_page_cursor(value: str) -> tuple[int, str] | None:
    """``<score>-<conversation id>`` of the last entry of the previous page."""
    ms, sep, conversation_id = value.partition("-")
    if not sep or not ms.isdigit() or len(ms) > 20 or not conversation_id:
        return None
    return int(ms), conversation_id


async def list_owned(
    client: aioredis.Redis, agent: str, owner: str, limit: int, after: tuple[int, str] | None
) -> Page:
    """The owner's conversations, newest first, ``limit`` at a time, after the ``after`` entry."""
    key = index_key(agent, owner)
    top = after[0] if after else "+inf"
    kept: list[dict[str, int | str]] = []
    offset = 0
    while len(kept) <= limit:
        batch = await client.zrevrangebyscore(
            key, top, "-inf", start=offset, num=limit + 1, withscores=True
        )
        if not batch:
            break
        offset += len(batch)
        # Equal scores come in descending member order: skip what the previous page showed.
        candidates = [
            (cid, int(score))
            for cid, score in batch
            if after is None or int(score) < after[0] or cid < after[1]
        ]
        async with client.pipeline(transaction=False) as pipe:
            for cid, _ in candidates:
                pipe.hgetall(conversation_key(cid))
            records = await pipe.execute()
        gone = []
        for (cid, score), record in zip(candidates, records, strict=True):
            if not record or record.get("owner", "") != owner:
                gone.append(cid)
                continue
            kept.append(
                {
                    "conversation_id": cid,
                    "created_ms": int(record.get("created", score // 1000)),
                    "updated_ms": int(record.get("updated", score // 1000)),
                    "_score": score,
                }
            )
        if gone:
            await client.zrem(key, *gone)
            offset -= len(gone)
    page, more = kept[:limit], len(kept) > limit
    next_cursor = f"{page[-1]['_score']}-{page[-1]['conversation_id']}" if more else None
    for entry in page:
        del entry["_score"]
    return Page(page, next_cursor)
