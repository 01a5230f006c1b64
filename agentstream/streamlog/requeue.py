"""Re-creating a queued run a failover lost, from the entity's signal.

``START`` answers ``202`` after one ``WAIT`` for a replica (``REDIS_MIN_REPLICAS``,
``REDIS_REPLICA_WAIT_MS``). When no replica confirmed in that time, the run's ``run.queued`` and
its meta fields live only on the primary; if the primary dies before replicating them, the
promoted replica has never heard of the run. The entity's signal is durable, though (the ``202``
is sent only after the Durable backend took it), so it carries what ``START`` recorded
(:class:`QueuedRun`), and the entity writes the run again from it (:data:`scripts.RECREATE`): with
its original id, ``run.queued`` at its original stream id (the cursor the ``202`` handed out) and
``seq`` 0, its ``Idempotency-Key`` and owner. Readers holding that cursor then read the run as if
nothing had happened.

A run missing from Redis is re-created only when a failover is the one way it can have gone
missing; otherwise nothing is written:

- a run whose ``run.queued`` is older than the start deadline (``RUN_START_DEADLINE_SECONDS``)
  would have been ended as ``not_started`` anyway: its records expired or were dropped
  (``expired``);
- a deleted conversation leaves a mark for the start deadline (``deleted``), and a follow-up
  message whose conversation record is gone belongs to a deleted or expired conversation;
- a conversation that moved on (another run holds the lock, a newer run was queued, the stream is
  already past the original id, or the ``Idempotency-Key`` names another run) is not rewritten
  under its later runs (``superseded``).

A redelivered signal of a run that did finish finds its record (in the entity's state or in the
meta hash) before any of this is asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..events import dumps_line
from .keys import parse_stream_id
from .scripts import RUN_RECORDS_KEPT, request_digest


@dataclass(frozen=True)
class QueuedRun:
    """What ``START`` wrote for a run, as the entity's signal carries it."""

    id: str  # the stream id of its run.queued (the 202's cursor)
    ts: int  # ms epoch, the run.queued entry's ``ts`` and the run's ``created``
    key: str  # the Idempotency-Key ("" for none)
    owner: str  # the caller that owns the conversation ("" for none)
    new: bool  # the run started the conversation

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, raw: Any) -> QueuedRun | None:
        """The record from a signal's input; None when absent or malformed (nothing re-created)."""
        if not isinstance(raw, dict):
            return None
        stream_id, ts, key, owner, new = (raw.get(f) for f in ("id", "ts", "key", "owner", "new"))
        if not (
            isinstance(stream_id, str)
            and parse_stream_id(stream_id) is not None
            and isinstance(ts, int)
            and isinstance(key, str)
            and isinstance(owner, str)
            and isinstance(new, bool)
        ):
            return None
        return cls(stream_id, ts, key, owner, new)


@dataclass(frozen=True)
class Requeue:
    """Everything the entity needs to write a lost run again: the signal's record and message,
    the agent (a new conversation is bound to it again) and the lifetimes ``START`` used."""

    queued: QueuedRun
    message: str
    agent: str
    conversation_ttl_ms: int
    start_deadline_ms: int
    run_record_ttl_ms: int
    runs_kept: int = RUN_RECORDS_KEPT

    def args(self, run_id: str) -> list[Any]:
        """``RECREATE``'s ``ARGV`` after the TTL and the cap (``START``'s, then its own)."""
        queued = self.queued
        return [
            run_id,
            queued.key,
            request_digest(self.message),
            dumps_line({"message": self.message}),
            queued.ts,
            self.conversation_ttl_ms,
            "0" if queued.new else "1",
            self.start_deadline_ms,
            queued.owner,
            self.runs_kept,
            self.run_record_ttl_ms,
            queued.id,
            self.start_deadline_ms,
            self.agent if queued.new else "",
        ]
