"""Where a stream read starts: the ``cursor`` query, the ``Last-Event-ID`` header, or neither."""

from __future__ import annotations

from dataclasses import dataclass

from .keys import parse_stream_id


class MalformedCursor(ValueError):
    """The cursor is neither ``0`` nor a Redis stream id ``ms-seq``."""


@dataclass(frozen=True)
class Cursor:
    """An exclusive start position.

    ``value`` is a stream id (read strictly after it), ``"0"`` (from the very beginning), or
    ``None`` (from the start of the conversation's latest run, ``run.queued`` included).
    """

    value: str | None

    @property
    def is_latest_run(self) -> bool:
        return self.value is None


def parse_cursor(query_cursor: str | None, last_event_id: str | None) -> Cursor:
    """Resolve the start position; ``Last-Event-ID`` wins over the query.

    The header wins because ``EventSource`` reconnects to the same URL (with the original
    ``?cursor=``) and reports its progress only in the header.
    """
    raw = last_event_id if last_event_id not in (None, "") else query_cursor
    if raw is None:
        return Cursor(None)
    if raw == "":
        return Cursor(None)
    if raw in ("0", "0-0"):
        return Cursor("0-0")
    if parse_stream_id(raw) is None:
        raise MalformedCursor(
            "cursor must be 0 or a stream id of the form <milliseconds>-<sequence>"
        )
    return Cursor(raw)
