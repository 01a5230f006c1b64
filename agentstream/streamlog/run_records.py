"""The records of finished runs, which outlive the stream.

Each run's terminal event writes its record in the same script (``keep_record`` in
:mod:`.scripts`): the run's status and its events, with each stretch of consecutive text merged
into one ``message.delta``. After the stream expired, the run's result is still here for
``RUN_RECORD_TTL_DAYS`` after the conversation's latest run ended (the newest
``RUN_RECORDS_KEPT`` runs of a conversation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis.asyncio as aioredis

from ..events import Event
from .keys import run_records_key


@dataclass(frozen=True)
class RunRecord:
    status: str  # completed | failed | cancelled
    start_id: str  # the stream id the run's run.queued had
    # The run's events in order, the last one terminal. Merged text keeps the seq of its first
    # piece, so seqs skip; ``id`` is empty (the entries are gone from the stream).
    events: list[Event]


async def load(client: aioredis.Redis, conversation_id: str, run_id: str) -> RunRecord | None:
    """The finished run's record; None while it runs, or once the record expired or was
    dropped by the bound."""
    raw = await client.hget(run_records_key(conversation_id), run_id)
    if raw is None:
        return None
    record = json.loads(raw)
    events = [
        Event("", event_type, run_id, int(seq), int(ts), data_json=data)
        for event_type, seq, ts, data in record["events"]
    ]
    return RunRecord(record["status"], record["start"], events)
