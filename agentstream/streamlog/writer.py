"""The synchronous stream writer the conversation entity uses.

Durable entity functions run on a worker thread, so this side uses the synchronous redis-py client.
Each flushed entry is one round trip (the ``APPEND`` script): it assigns the run's next ``seq``,
appends the entry, applies the approximate ``MAXLEN`` cap, refreshes both keys' TTL and the run's
lease, and reports the run's cancel flag.

Every call is retried through Redis blips for a budget (``REDIS_RETRY_SECONDS``). That is safe
because each append carries the run's attempt and a per-attempt write number: a replay after a lost
reply returns the entry already written, and appends of an older attempt are refused once a newer
one has begun.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

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
from .keys import conversation_keys
from .retry import StoreUnavailable, call_with_retries

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
STORE_UNAVAILABLE = {
    "code": "store_unavailable",
    "message": "The agent lost its connection to the stream store. Please try again.",
}


def append_args(
    run_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    ttl_ms: int,
    maxlen: int,
    attempt: int | None = None,
    write: int = 0,
    lease_ms: int = 0,
    turn: list[dict[str, Any]] | None = None,
    now: float | None = None,
) -> list[Any]:
    """The ``ARGV`` of the ``APPEND`` script for one event."""
    return [
        ttl_ms,
        maxlen,
        run_id,
        "" if attempt is None else attempt,
        write,
        event_type,
        dumps_line(data),
        int((time.time() if now is None else now) * 1000),
        _STATUS_AFTER.get(event_type, ""),
        "1" if event_type in TERMINAL_TYPES else "0",
        lease_ms,
        "" if turn is None else json.dumps(turn, separators=(",", ":")),
    ]


@dataclass(frozen=True)
class Appended:
    id: str
    seq: int
    cancel_requested: bool


@dataclass(frozen=True)
class Begun:
    """What :meth:`RunLog.begin` found.

    ``outcome`` is ``begun`` (``attempt`` holds this attempt's number), ``finished`` (``status``
    is the run's final status and ``turn`` the history messages a completed run added, if still
    kept) or ``unknown`` (no such run: the conversation was deleted or its stream expired).
    """

    outcome: str
    attempt: int = 0
    status: str | None = None
    turn: list[dict[str, Any]] | None = None


class RunLog:
    """The Redis side of one run of one conversation: begin, append, heartbeat.

    Every call is one round trip, retried through Redis blips for ``retry_seconds``; it raises
    :class:`StoreUnavailable` when the budget runs out and :class:`RunAlreadyFinished` when this
    attempt may not write any more.
    """

    def __init__(
        self,
        client: redis.Redis,
        conversation_id: str,
        run_id: str,
        *,
        ttl_seconds: int,
        maxlen: int,
        lease_seconds: float = 30.0,
        retry_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._keys = conversation_keys(conversation_id)
        self.run_id = run_id
        self._ttl_ms = ttl_seconds * 1000
        self._maxlen = maxlen
        self._lease_ms = int(lease_seconds * 1000)
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._append = client.register_script(scripts.APPEND)
        self._begin = client.register_script(scripts.BEGIN)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self.attempt: int | None = None
        self._writes = 0

    def _call(self, script: Any, args: list[Any]) -> Any:
        return call_with_retries(lambda: script(keys=self._keys, args=args), self._retry_seconds)

    def begin(self, token: str, committed_runs: Sequence[str] = ()) -> Begun:
        """Count this delivery as the run's next attempt and take its lease.

        ``token`` identifies the delivery, so a retried call counts it once; the turns of
        ``committed_runs`` (the entity state already holds them) are no longer kept.
        """
        base = [self._ttl_ms, self._maxlen, self.run_id, token, self._lease_ms]
        reply = self._call(self._begin, [*base, *committed_runs])
        outcome = as_text(reply[0])
        if outcome == "begun":
            self.attempt = int(reply[1])
            self._writes = 0
            return Begun("begun", attempt=self.attempt)
        if outcome == "finished":
            turn = json.loads(reply[2]) if len(reply) > 2 and reply[2] else None
            return Begun("finished", status=as_text(reply[1]), turn=turn)
        return Begun("unknown")

    def append(
        self, event_type: str, data: dict[str, Any], turn: list[dict[str, Any]] | None = None
    ) -> Appended:
        """Append one event; raises :class:`RunAlreadyFinished` when this attempt may not write.

        ``turn`` (with a terminal event) is kept beside the run's status, so a redelivery that
        finds the run finished can restore it into the entity's history.
        """
        self._writes += 1
        args = append_args(
            self.run_id,
            event_type,
            data,
            ttl_ms=self._ttl_ms,
            maxlen=self._maxlen,
            attempt=self.attempt,
            write=self._writes,
            lease_ms=self._lease_ms if self.attempt is not None else 0,
            turn=turn,
            now=self._clock(),
        )
        reply = self._call(self._append, args)
        if not reply or reply[0] is None:
            reason = as_text(reply[1]) if reply and len(reply) > 1 else "finished"
            raise RunAlreadyFinished(f"{self.run_id}: {reason}")
        entry_id, seq, cancel = reply
        return Appended(id=as_text(entry_id), seq=int(seq), cancel_requested=bool(int(cancel)))

    def heartbeat(self) -> bool:
        """Extend the run's lease; True when a cancel was requested."""
        args = [self._ttl_ms, self._maxlen, self.run_id, self.attempt or 0, self._lease_ms]
        answer = int(self._call(self._heartbeat, args))
        if answer < 0:
            raise RunAlreadyFinished(f"{self.run_id}: no longer this attempt's to write")
        return answer == 1


class EventLog(Protocol):
    """What :class:`StreamWriter` needs of a :class:`RunLog`."""

    run_id: str

    def append(
        self, event_type: str, data: dict[str, Any], turn: list[dict[str, Any]] | None = None
    ) -> Appended: ...

    def heartbeat(self) -> bool: ...


class StreamWriter:
    """Coalesces text deltas and guarantees the run ends with exactly one terminal event.

    Deltas are buffered and flushed when the buffer reaches ``flush_chars`` characters or is
    ``flush_ms`` old, and always before any other event. While :meth:`pacing` is active a
    background thread flushes buffered text by age even when the model pauses, and sends a
    heartbeat when nothing was written for ``heartbeat_seconds`` (a slow model or tool keeps the
    run's lease). A cancel flag reported by a write or a heartbeat raises :class:`RunCancelled`
    on the agent's thread so it stops generating.
    """

    def __init__(
        self,
        log: EventLog,
        *,
        flush_chars: int,
        flush_ms: int,
        heartbeat_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._flush_chars = flush_chars
        self._flush_seconds = flush_ms / 1000
        self._heartbeat_seconds = heartbeat_seconds
        self._clock = clock
        self._lock = threading.Condition()
        self._buffer: list[str] = []
        self._buffered_chars = 0
        self._buffer_started = 0.0
        self._last_write = clock()
        self._pending: BaseException | None = None  # raised on the agent's thread
        self._closing = False
        self.terminal_type: str | None = None
        self.entries_written = 0

    @property
    def run_id(self) -> str:
        return self._log.run_id

    @contextmanager
    def pacing(self) -> Iterator[StreamWriter]:
        """Run the background flusher and heartbeat for the duration of the block."""
        pacer = threading.Thread(target=self._pace, name=f"pacer-{self.run_id}", daemon=True)
        pacer.start()
        try:
            yield self
        finally:
            with self._lock:
                self._closing = True
                self._lock.notify_all()
            pacer.join()

    def text(self, delta: str) -> None:
        if not delta:
            return
        with self._lock:
            self._raise_pending()
            if not self._buffer:
                self._buffer_started = self._clock()
                self._lock.notify_all()  # the pacer now has a flush deadline
            self._buffer.append(delta)
            self._buffered_chars += len(delta)
            if self._buffered_chars >= self._flush_chars:
                self._flush()
            else:
                self._flush_if_due()

    def flush_if_due(self) -> None:
        """Flush buffered text that has waited ``flush_ms``; cheap to call often."""
        with self._lock:
            self._raise_pending()
            self._flush_if_due()

    def event(self, event_type: str, data: dict[str, Any]) -> None:
        """Write a non-text event, after any buffered text."""
        if event_type in TERMINAL_TYPES:
            raise ValueError("use finish() for terminal events")
        with self._lock:
            self._raise_pending()
            self._flush()
            self._write(event_type, data)

    def finish(
        self,
        event_type: str,
        data: dict[str, Any],
        turn: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write the terminal event. Buffered text is flushed first unless the run failed."""
        if event_type not in TERMINAL_TYPES:
            raise ValueError(f"{event_type} is not a terminal event")
        with self._lock:
            if self.terminal_type is not None:
                raise RuntimeError("the run already has its terminal event")
            self._closing = True  # the pacer writes nothing more
            self._lock.notify_all()
            if event_type == RUN_COMPLETED:
                # A background write that failed (its text is gone) or saw a cancel must not
                # be followed by "completed".
                self._raise_pending()
                self._flush()
            else:
                self._buffer.clear()
                self._buffered_chars = 0
            self._write(event_type, data, turn)

    def _raise_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending

    def _flush_if_due(self) -> None:
        if self._buffer and self._clock() - self._buffer_started >= self._flush_seconds:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        text = "".join(self._buffer)
        self._buffer.clear()
        self._buffered_chars = 0
        self._write(MESSAGE_DELTA, {"text": text})

    def _write(
        self, event_type: str, data: dict[str, Any], turn: list[dict[str, Any]] | None = None
    ) -> None:
        appended = self._log.append(event_type, data, turn)
        self._last_write = self._clock()
        self.entries_written += 1
        if event_type in TERMINAL_TYPES:
            self.terminal_type = event_type
        elif appended.cancel_requested:
            raise RunCancelled()

    def _pace(self) -> None:
        """The background thread: flush by age, heartbeat when idle; hand errors over."""
        with self._lock:
            while not self._closing:
                now = self._clock()
                wake = self._last_write + self._heartbeat_seconds
                flush_at = self._buffer_started + self._flush_seconds
                if self._buffer:
                    wake = min(wake, flush_at)
                if wake > now:
                    self._lock.wait(wake - now)
                    continue
                try:
                    if self._buffer and now >= flush_at:
                        self._flush()
                    else:
                        self._last_write = now
                        if self._log.heartbeat():
                            raise RunCancelled()
                except Exception as exc:  # noqa: BLE001 - handed to the agent's thread
                    self._pending = exc
                    return


@contextmanager
def terminal_guard(writer: StreamWriter) -> Iterator[StreamWriter]:
    """Make sure the run ends with exactly one terminal event, whatever the body does.

    - :class:`RunCancelled` becomes ``run.cancelled``;
    - :class:`RunFailure` becomes ``run.failed`` with its code and message;
    - :class:`StoreUnavailable` (Redis gone for the whole retry budget) becomes ``run.failed``
      ``store_unavailable``, tried for one more budget; if Redis is still gone the run's lease
      runs out and the next request that meets the run ends it (``worker_lost``);
    - :class:`RunAlreadyFinished` (the run ended elsewhere, or a newer attempt took over) writes
      nothing;
    - any other exception becomes ``run.failed`` with a generic message (the exception's type is
      logged, its text is not: library errors can carry URLs, keys or prompts);
    - a body that returns without a terminal event also ends in ``run.failed``.
    """
    try:
        yield writer
    except RunAlreadyFinished as exc:
        logger.info("run %s may not write any more (%s); nothing more written", writer.run_id, exc)
        return
    except RunCancelled:
        _finish_once(writer, RUN_CANCELLED, {})
        return
    except RunFailure as failure:
        _finish_once(writer, RUN_FAILED, {"code": failure.code, "message": failure.message})
        return
    except StoreUnavailable:
        _finish_once(writer, RUN_FAILED, STORE_UNAVAILABLE)
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
    except StoreUnavailable:
        logger.error("run %s: terminal event not written; its lease will end it", writer.run_id)
