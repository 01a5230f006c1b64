"""Redis key names and stream-id arithmetic.

Every key of a conversation carries the hash tag of the conversation's *slot group*
(``agent-stream:{cg07-12}:<conversation id>``): one of :data:`SLOT_GROUPS` tags, chosen by the
conversation id. So all keys of a conversation share one Redis Cluster slot (every script and
transaction stays single-slot), and so do all conversations of a group and the group's notice
channel, which is what lets one ``XREAD`` of the stream hub cover the notified streams of a group
on any topology (docs/architecture.md, "Redis topologies"). The tags are picked once so that
group ``k`` lands in the ``k``-th sixteenth of the slot space: a cluster whose shards own even slot
ranges gets an even share of the groups.
"""

from __future__ import annotations

import re
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

_CONVERSATION_ID = re.compile(r"[0-9a-f]{32}")
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_SEQ = 2**64 - 1


# How many slot groups there are. Part of the key layout: every worker must use the same number.
# It bounds how many shards the conversations can spread over (and the hub's notice channels).
SLOT_GROUPS = 16


def is_conversation_id(value: str) -> bool:
    return bool(_CONVERSATION_ID.fullmatch(value))


@cache
def group_tags() -> tuple[str, ...]:
    """The hash tag of each slot group: group ``k``'s slot sits in the middle of its range."""
    width = REDIS_CLUSTER_HASH_SLOTS // SLOT_GROUPS
    tags = []
    for group in range(SLOT_GROUPS):
        low, high = group * width + width // 4, group * width + 3 * width // 4
        candidate = 0
        while not low <= key_slot(f"cg{group:02d}-{candidate}".encode()) < high:
            candidate += 1
        tags.append(f"cg{group:02d}-{candidate}")
    return tuple(tags)


def group_tag(conversation_id: str) -> str:
    """The hash tag of the conversation's slot group (conversation ids are random hex)."""
    return group_tags()[int(conversation_id[-8:], 16) % SLOT_GROUPS]


def hash_tag(key: str) -> str:
    """The hash tag of any key this module names (what decides its cluster slot)."""
    start = key.index("{") + 1
    return key[start : key.index("}", start)]


def stream_key(conversation_id: str) -> str:
    return f"agent-stream:{{{group_tag(conversation_id)}}}:{conversation_id}"


def meta_key(conversation_id: str) -> str:
    return f"agent-meta:{{{group_tag(conversation_id)}}}:{conversation_id}"


def conversation_key(conversation_id: str) -> str:
    """The conversation record: outlives the stream (``CONVERSATION_TTL_DAYS``)."""
    return f"agent-conv:{{{group_tag(conversation_id)}}}:{conversation_id}"


def run_records_key(conversation_id: str) -> str:
    """The records of the conversation's finished runs: outlive the stream
    (``RUN_RECORD_TTL_DAYS``)."""
    return f"agent-runs:{{{group_tag(conversation_id)}}}:{conversation_id}"


def conversation_keys(conversation_id: str) -> list[str]:
    """``KEYS`` of every run-control script: the stream, the meta hash, the conversation record
    and the run records."""
    return [
        stream_key(conversation_id),
        meta_key(conversation_id),
        conversation_key(conversation_id),
        run_records_key(conversation_id),
    ]


def parse_stream_id(value: str) -> tuple[int, int] | None:
    """``"ms-seq"`` as a pair of integers, or ``None`` when it is not a full stream id."""
    match = _STREAM_ID.fullmatch(value)
    if not match:
        return None
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > _MAX_SEQ or seq > _MAX_SEQ:
        return None
    return ms, seq


def stream_id_before(value: str) -> str:
    """The greatest stream id smaller than ``value``: an exclusive start for ``XREAD``.

    ``XREAD`` returns entries strictly after the id it is given, which is how a read can start
    *at* an entry on Redis 6.0 (which has no exclusive ``XRANGE (id``).
    """
    parsed = parse_stream_id(value)
    if parsed is None:
        raise ValueError(f"not a stream id: {value!r}")
    ms, seq = parsed
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{_MAX_SEQ}"
    return "0-0"


def deleted_key(conversation_id: str) -> str:
    """A short-lived mark left by a delete: a run signalled before the delete is not re-created
    from its signal (:mod:`.requeue`) as if a failover had lost it."""
    return f"agent-deleted:{{{group_tag(conversation_id)}}}:{conversation_id}"


def notice_channel(tag: str) -> str:
    """The slot group's sharded pub/sub channel: every script that appends to a stream of the
    group publishes the stream's key there (``notify`` in :mod:`.scripts`); same slot as its keys.
    """
    return f"agentstream-notify:{{{tag}}}"
