"""Telling a read the ``MAXLEN`` cap overtook from a continuous one, by the events' ``seq``.

A run numbers its events from 0 without gaps, and a response never crosses from one run into
another except at the start of a run. So within one response every event follows the one before
it: the next ``seq`` of the same run, or ``seq`` 0 of a new run. The cap trims the oldest entries;
when it removes entries a live reader had not read yet, the reader's next read silently starts
after the hole, and the first event it gets does not follow the last one it delivered.
"""

from __future__ import annotations

from ..events import Event
from .keys import stream_id_before


class StreamTruncated(Exception):
    """Entries after ``last_id`` that this response had not delivered yet were trimmed away.

    ``resume_cursor`` continues with the first entry that is left (``next_id``), accepting the
    loss; resuming from ``last_id`` is ``410 cursor_trimmed``.
    """

    def __init__(self, last_id: str, next_id: str) -> None:
        super().__init__(f"entries between {last_id} and {next_id} were trimmed away")
        self.last_id = last_id
        self.next_id = next_id
        self.resume_cursor = stream_id_before(next_id)


class SeqContinuity:
    """The last event a response delivered, and whether the next ones follow it."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: Event | None = None

    def follow(self, events: list[Event]) -> int:
        """How many of ``events`` follow on, in order; ``last`` becomes the last of those."""
        last = self.last
        for index, event in enumerate(events):
            if last is not None and event.seq != (last.seq + 1 if event.run == last.run else 0):
                self.last = last
                return index
            last = event
        self.last = last
        return len(events)
