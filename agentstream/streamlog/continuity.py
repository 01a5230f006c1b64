"""Telling a read the ``MAXLEN`` cap overtook from a continuous one, by the events' ``seq``.

A run numbers its events from 0 without gaps, and a response never crosses from one run into
another except at the start of a run. So within one response every event follows the one before
it: the next ``seq`` of the same run, or ``seq`` 0 of a new run. The cap trims the oldest entries;
when it removes entries a live reader had not read yet, the reader's next read silently starts
after the hole, and the first event it gets does not follow the last one it delivered.
"""

from __future__ import annotations

from ..events import Event


class SeqContinuity:
    """The last event a response delivered, and whether the next ones follow it."""

    __slots__ = ("last",)

    def __init__(self, last: Event | None = None) -> None:
        self.last = last  # None: the first event is taken as it comes

    def follow(self, events: list[Event]) -> int:
        """How many of ``events`` follow on, in order; ``last`` becomes the last of those.

        Constant work for the usual batch (one run, ``seq`` ascending by one): it runs for every
        batch of every live reader.
        """
        first, final = events[0], events[-1]
        last = self.last
        if (last is None or _follows(last, first)) and (
            final.run == first.run and final.seq - first.seq == len(events) - 1
        ):
            self.last = final
            return len(events)
        for index, event in enumerate(events):
            if last is not None and not _follows(last, event):
                self.last = last
                return index
            last = event
        self.last = last
        return len(events)


def _follows(previous: Event, event: Event) -> bool:
    return event.seq == (previous.seq + 1 if event.run == previous.run else 0)
