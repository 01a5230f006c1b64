"""Which agent a conversation belongs to, kept in the conversation record (field ``agent``).

A conversation is bound to the agent that started it, so a message sent through another agent's
route can never split its history across two entities: to every other agent it is ``404``.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from .keys import conversation_key

# Only an existing record is bound: a conversation deleted meanwhile is not brought back.
_BIND = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSETNX', KEYS[1], 'agent', ARGV[1])
end
return -1
"""


async def bind_agent(client: aioredis.Redis, conversation_id: str, agent: str) -> None:
    """Bind a new conversation to ``agent`` (the first binding stays)."""
    await client.eval(_BIND, 1, conversation_key(conversation_id), agent)


async def belongs_to(client: aioredis.Redis, conversation_id: str, agent: str) -> bool:
    """False only when the conversation is bound to another agent."""
    bound = await client.hget(conversation_key(conversation_id), "agent")
    return bound is None or bound == agent
