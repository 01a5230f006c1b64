"""The synchronous stream writer the conversation entity uses.

Durable entity functions run on a worker thread, so this side uses the synchronous redis-py client.
Each flushed entry is one round trip (the ``APPEND`` script): it assigns the run's next ``seq``,
appends the entry, applies the approximate ``MAXLEN`` cap, refreshes both keys' TTL and reports
the run's cancel flag.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from ..events import (
    MESSAGE_DELTA,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_RESTARTED,
    RUN_STARTED,
    TERMINAL_TYPES,
    as_text,
    dumps_line,
)
from ..failures import RunAlreadyFinished, RunCancelled, RunFailure
from . import scripts
from .keys import meta_key, stream_key

logger = logging.getLogger(__name__)

_STATUS_AFTER = {
    RUN_QUEUED: "queued",
    RUN_STARTED: "running",
    RUN_RESTARTED: "running",
    RUN_COMPLETED: "completed",
    RUN_FAILED: "failed",
    RUN_CANCELLED: "cancelled",
}

# Statuses of a run that has its terminal event.
FINISHED_STATUSES = frozenset(_STATUS_AFTER[t] for t in TERMINAL_TYPES)

INTERNAL_ERROR_MESSAGE = "The agent stopped because of an internal error. Please try again."


def append_args(
    run_id: str,
    event_type: str,
    data: dict[str, Any],
    ttl_ms: int,
    maxlen: int,
    now: float | None = None,
) -> list[Any]:
    """The ``ARGV`` of the ``APPEND`` script for one event."""
    return [
        run_id,
        event_type,
        dumps_line(data),
        int((time.time() if now is None else now) * 1000),
        ttl_ms,
        maxlen,
        _STATUS_AFTER.get(event_type, ""),
        "1" if event_type in TERMINAL_TYPES else "0",
    ]


@dataclass(frozen=True)
class Appended:
    id: str
    seq: int
    cancel_requested: bool


class RunLog:
    """Appends the events of one run of one conversation; one round trip per event."""

    def __init__(
        self,
        client: redis.Redis,
        conversation_id: str,
        run_id: str,
        *,
        ttl_seconds: int,
        maxlen: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._keys = [stream_key(conversation_id), meta_key(conversation_id)]
        self.run_id = run_id
        self._ttl_ms = ttl_seconds * 1000
        self._maxlen = maxlen
        self._clock = clock
        self._append = client.register_script(scripts.APPEND)

    def append(self, event_type: str, data: dict[str, Any]) -> Appended:
        """Append one event; raises :class:`RunAlreadyFinished` after the run's terminal event."""
        reply = self._append(
            keys=self._keys,
            args=append_args(
                self.run_id, event_type, data, self._ttl_ms, self._maxlen, self._clock()
            ),
        )
        if not reply or reply[0] is None:
            raise RunAlreadyFinished(self.run_id)
        entry_id, seq, cancel = reply
        return Appended(id=as_text(entry_id), seq=int(seq), cancel_requested=bool(int(cancel)))

    def status(self) -> str | None:
        """The run's status in Redis: queued, running, completed, failed, cancelled or None."""
        value = self._client.hget(self._keys[1], f"status:{self.run_id}")
        return None if value is None else as_text(value)

    def count_attempt(self) -> int:
        """Count one more delivery of the run. Redis keeps it even if entity state rolls back."""
        return int(self._client.hincrby(self._keys[1], f"attempts:{self.run_id}", 1))


class StreamWriter:
    """Coalesces text deltas and guarantees the run ends with exactly one terminal event.

    Deltas are buffered and flushed when the buffer reaches ``flush_chars`` characters or is
    ``flush_ms`` old (checked on each delta and on :meth:`flush_if_due`), and always before any
    other event. A cancel flag reported by a write raises :class:`RunCancelled` so the caller
    stops generating.
    """

    def __init__(
        self,
        log: RunLog,
        *,
        flush_chars: int,
        flush_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._flush_chars = flush_chars
        self._flush_seconds = flush_ms / 1000
        self._clock = clock
        self._buffer: list[str] = []
        self._buffered_chars = 0
        self._buffer_started = 0.0
        self.terminal_type: str | None = None
        self.entries_written = 0

    @property
    def run_id(self) -> str:
        return self._log.run_id

    def text(self, delta: str) -> None:
        if not delta:
            return
        if not self._buffer:
            self._buffer_started = self._clock()
        self._buffer.append(delta)
        self._buffered_chars += len(delta)
        if self._buffered_chars >= self._flush_chars:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        """Flush buffered text that has waited ``flush_ms``; cheap to call often."""
        if self._buffer and self._clock() - self._buffer_started >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        text = "".join(self._buffer)
        self._buffer.clear()
        self._buffered_chars = 0
        self._write(MESSAGE_DELTA, {"text": text})

    def event(self, event_type: str, data: dict[str, Any]) -> None:
        """Write a non-text event, after any buffered text."""
        if event_type in TERMINAL_TYPES:
            raise ValueError("use finish() for terminal events")
        self.flush()
        self._write(event_type, data)

    def finish(self, event_type: str, data: dict[str, Any]) -> None:
        """Write the terminal event. Buffered text is flushed first unless the run failed."""
        if event_type not in TERMINAL_TYPES:
            raise ValueError(f"{event_type} is not a terminal event")
        if self.terminal_type is not None:
            raise RuntimeError("the run already has its terminal event")
        if event_type == RUN_COMPLETED:
            self.flush()
        else:
            self._buffer.clear()
            self._buffered_chars = 0
        self._write(event_type, data)

    def _write(self, event_type: str, data: dict[str, Any]) -> None:
        appended = self._log.append(event_type, data)
        self.entries_written += 1
        if event_type in TERMINAL_TYPES:
            self.terminal_type = event_type
        elif appended.cancel_requested:
            raise RunCancelled()


@contextmanager
def terminal_guard(writer: StreamWriter) -> Iterator[StreamWriter]:
    """Make sure the run ends with exactly one terminal event, whatever the body does.

    - :class:`RunCancelled` becomes ``run.cancelled``;
    - :class:`RunFailure` becomes ``run.failed`` with its code and message;
    - any other exception becomes ``run.failed`` with a generic message (the exception's type is
      logged, its text is not: library errors can carry URLs, keys or prompts);
    - a body that returns without a terminal event also ends in ``run.failed``.
    """
    try:
        yield writer
    except RunAlreadyFinished:
        logger.info("run %s already finished; nothing more written", writer.run_id)
        return
    except RunCancelled:
        _finish_once(writer, RUN_CANCELLED, {})
        return
    except RunFailure as failure:
        _finish_once(writer, RUN_FAILED, {"code": failure.code, "message": failure.message})
        return
    except Exception as exc:  # noqa: BLE001 - every failure must end the stream
        logger.error("run %s failed: %s", writer.run_id, type(exc).__name__)
        _finish_once(
            writer, RUN_FAILED, {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}
        )
        return
    if writer.terminal_type is None:
        _finish_once(
            writer,
            RUN_FAILED,
            {"code": "no_result", "message": "The agent ended without a result."},
        )


def _finish_once(writer: StreamWriter, event_type: str, data: dict[str, Any]) -> None:
    if writer.terminal_type is not None:
        logger.warning("run %s raised after its terminal event", writer.run_id)
        return
    try:
        writer.finish(event_type, data)
    except RunAlreadyFinished:
        logger.info("run %s already finished; nothing more written", writer.run_id)
