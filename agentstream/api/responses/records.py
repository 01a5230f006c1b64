"""What the Responses surface keeps in Redis beside the conversation's own keys.

- ``agent-response:{<run>}`` (hash): the response's conversation, model, ``background``,
  ``previous_response_id`` and where its run starts in the stream: what a Response shows that the
  run's events do not hold, and where to find the conversation of a ``resp_<run>`` id.
- ``agent-response-latest:{<conversation>}``: the conversation's newest response, which is the
  only one ``previous_response_id`` may continue.

Both live as long as a conversation does (``CONVERSATION_TTL_DAYS``). The run's result itself is
in its stream and, once it ended, in its run record (:mod:`agentstream.streamlog.run_records`),
which outlives the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from .translate import ResponseMeta


def _record_key(run_id: str) -> str:
    return f"agent-response:{{{run_id}}}"


def _latest_key(conversation_id: str) -> str:
    return f"agent-response-latest:{{{conversation_id}}}"


@dataclass(frozen=True)
class ResponseRecord:
    meta: ResponseMeta
    start_id: str  # the stream id of the run's run.queued


async def save(client: aioredis.Redis, meta: ResponseMeta, start_id: str, ttl_seconds: int) -> None:
    """Record a new response and make it its conversation's latest."""
    fields = {
        "conversation": meta.conversation_id,
        "model": meta.model,
        "background": "1" if meta.background else "0",
        "previous": meta.previous_response_id or "",
        "start": start_id,
    }
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(_record_key(meta.run_id), mapping=fields)
        pipe.expire(_record_key(meta.run_id), ttl_seconds)
        pipe.set(_latest_key(meta.conversation_id), meta.run_id, ex=ttl_seconds)
        await pipe.execute()


async def load(client: aioredis.Redis, run_id: str) -> ResponseRecord | None:
    fields = await client.hgetall(_record_key(run_id))
    if not fields or "conversation" not in fields:
        return None
    meta = ResponseMeta(
        run_id=run_id,
        conversation_id=fields["conversation"],
        model=fields["model"],
        background=fields.get("background") == "1",
        previous_response_id=fields.get("previous") or None,
    )
    return ResponseRecord(meta, fields["start"])


async def latest(client: aioredis.Redis, conversation_id: str) -> str | None:
    """The run of the conversation's newest response."""
    return await client.get(_latest_key(conversation_id))
