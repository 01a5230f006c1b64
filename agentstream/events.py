"""The event model (DESIGN.md 4) and its wire encodings: SSE, NDJSON and plain text.

A stream entry holds ``type``, ``run``, ``seq``, ``ts`` and ``data`` (the payload as one-line JSON).
Clients see each event as one flat JSON object: the stream id as ``id``, those fields, and the
payload's fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RUN_QUEUED = "run.queued"
RUN_STARTED = "run.started"
MESSAGE_DELTA = "message.delta"
TOOL_CALL = "tool.call"
TOOL_RESULT = "tool.result"
RUN_RESTARTED = "run.restarted"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"

EVENT_TYPES = frozenset(
    {
        RUN_QUEUED,
        RUN_STARTED,
        MESSAGE_DELTA,
        TOOL_CALL,
        TOOL_RESULT,
        RUN_RESTARTED,
        RUN_COMPLETED,
        RUN_FAILED,
        RUN_CANCELLED,
    }
)
TERMINAL_TYPES = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})

_RESERVED = ("id", "type", "run", "seq", "ts")


def dumps_line(value: Any) -> str:
    """One-line JSON.

    ``ensure_ascii`` escapes every non-ASCII character, so no line separator a client might split
    on (``\\u2028``, ``\\x85``, ...) can appear raw inside an SSE ``data:`` line or an NDJSON line.
    """
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


@dataclass(frozen=True)
class Event:
    """One event as read back from the stream."""

    id: str
    type: str
    run: str
    seq: int
    ts: int
    data: Mapping[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @classmethod
    def from_entry(cls, entry_id: str | bytes, fields: Mapping[Any, Any]) -> Event:
        """Build an event from a raw ``XREAD`` entry (bytes or str fields)."""
        text = {as_text(k): as_text(v) for k, v in fields.items()}
        return cls(
            id=as_text(entry_id),
            type=text["type"],
            run=text["run"],
            seq=int(text["seq"]),
            ts=int(text["ts"]),
            data=json.loads(text.get("data") or "{}"),
        )

    def to_public(self) -> dict[str, Any]:
        """The flat JSON object clients see."""
        public: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "run": self.run,
            "seq": self.seq,
            "ts": self.ts,
        }
        for key, value in self.data.items():
            if key not in _RESERVED:
                public[key] = value
        return public


def as_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- Server-Sent Events -----------------------------------------------------------------------


def sse_event(event: Event) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {dumps_line(event.to_public())}\n\n"


def sse_retry(retry_ms: int) -> str:
    return f"retry: {retry_ms}\n\n"


def sse_keepalive() -> str:
    return ": keep-alive\n\n"


# --- NDJSON -----------------------------------------------------------------------------------


def ndjson_event(event: Event) -> str:
    return dumps_line(event.to_public()) + "\n"


# --- Plain text -------------------------------------------------------------------------------


def text_event(event: Event) -> str:
    """Only the assistant's text, plus a short bracketed note where a run restarts or ends badly."""
    if event.type == MESSAGE_DELTA:
        return str(event.data.get("text", ""))
    if event.type == RUN_RESTARTED:
        return f"\n[run restarted, attempt {event.data.get('attempt')}]\n"
    if event.type == RUN_FAILED:
        return f"\n[run failed: {event.data.get('message', '')}]\n"
    if event.type == RUN_CANCELLED:
        return "\n[run cancelled]\n"
    if event.type == RUN_COMPLETED:
        return "\n"
    return ""


@dataclass(frozen=True)
class StreamFormat:
    """How a stream response is encoded, chosen from the ``Accept`` header."""

    media_type: str
    preamble: str
    keepalive: str

    def encode(self, event: Event) -> str:
        if self.media_type == SSE:
            return sse_event(event)
        if self.media_type == NDJSON:
            return ndjson_event(event)
        return text_event(event)


SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
TEXT = "text/plain"


def stream_format(media_type: str, retry_ms: int) -> StreamFormat:
    if media_type == SSE:
        return StreamFormat(SSE, sse_retry(retry_ms), sse_keepalive())
    if media_type == NDJSON:
        # A blank line keeps proxies from timing out an idle response; NDJSON readers skip it.
        return StreamFormat(NDJSON, "", "\n")
    if media_type == TEXT:
        return StreamFormat(TEXT, "", "")
    raise ValueError(f"unsupported stream format {media_type!r}")


def negotiate(accept: str | None) -> str | None:
    """Pick the stream format for an ``Accept`` header; ``None`` means 406.

    No header, ``*/*`` or ``text/*`` get the default, SSE. Quality values are honoured.
    """
    if not accept or not accept.strip():
        return SSE
    offers: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            offers.append((-quality, index, media.lower()))
    for _, _, media in sorted(offers):
        if media in (SSE, NDJSON, TEXT):
            return media
        if media in ("*/*", "text/*"):
            return SSE
        if media == "application/*":
            return NDJSON
    return None
