"""The stream writer the conversation entity uses: coalesced text, pacing, one terminal event.

Each flushed entry is one round trip through :class:`~.runlog.RunLog` (the ``APPEND`` script): it
assigns the run's next ``seq``, appends the entry, applies the approximate ``MAXLEN`` cap,
refreshes both keys' TTL and the run's lease, and reports the run's cancel flag.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .. import telemetry
from ..events import (
    MESSAGE_DELTA,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    TERMINAL_TYPES,
)
from ..failures import RunAlreadyFinished, RunCancelled, RunFailure
from ..logs import log_internal_error
from .retry import StoreUnavailable
from .runlog import Appended

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "The agent stopped because of an internal error. Please try again."
STORE_UNAVAILABLE = {
    "code": "store_unavailable",
    "message": "The agent lost its connection to the stream store. Please try again.",
}


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
        self.terminal_code: str | None = None  # a failed run's code
        self.entries_written = 0
        # When the writer began, until its first text goes out (time to first token).
        self._first_text_due: float | None = clock()

    @property
    def run_id(self) -> str:
        return self._log.run_id

    @contextmanager
    def pacing(self) -> Iterator[StreamWriter]:
        """Run the background flusher and heartbeat for the duration of the block."""
        # In the run's context: its writes belong to the run's trace.
        in_context = functools.partial(contextvars.copy_context().run, self._pace)
        pacer = threading.Thread(target=in_context, name=f"pacer-{self.run_id}", daemon=True)
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
        telemetry.flush_size.record(len(text))
        if self._first_text_due is not None:
            telemetry.time_to_first_token(self._clock() - self._first_text_due)
            self._first_text_due = None
        self._write(MESSAGE_DELTA, {"text": text})

    def _write(
        self, event_type: str, data: dict[str, Any], turn: list[dict[str, Any]] | None = None
    ) -> None:
        appended = self._log.append(event_type, data, turn)
        self._last_write = self._clock()
        self.entries_written += 1
        if event_type in TERMINAL_TYPES:
            self.terminal_type = event_type
            self.terminal_code = data.get("code")
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
    except Exception:  # noqa: BLE001 - every failure must end the stream
        log_internal_error(logger, "run %s failed", writer.run_id)
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
