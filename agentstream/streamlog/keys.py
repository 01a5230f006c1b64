"""Redis key names and stream-id arithmetic.

Both keys of a conversation carry the conversation id as a hash tag (``{...}``) so they live in
the same Redis Cluster slot and can be used together in one script or transaction.
"""

from __future__ import annotations

import re

_CONVERSATION_ID = re.compile(r"[0-9a-f]{32}")
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_SEQ = 2**64 - 1


def is_conversation_id(value: str) -> bool:
    return bool(_CONVERSATION_ID.fullmatch(value))


def stream_key(conversation_id: str) -> str:
    return f"agent-stream:{{{conversation_id}}}"


def meta_key(conversation_id: str) -> str:
    return f"agent-meta:{{{conversation_id}}}"


def conversation_key(conversation_id: str) -> str:
    """The conversation record: outlives the stream (``CONVERSATION_TTL_DAYS``)."""
    return f"agent-conv:{{{conversation_id}}}"


def conversation_keys(conversation_id: str) -> list[str]:
    """``KEYS`` of every run-control script: the stream, the meta hash, the record."""
    return [
        stream_key(conversation_id),
        meta_key(conversation_id),
        conversation_key(conversation_id),
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
