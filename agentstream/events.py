"""The event model (docs/api.md, Events) and its wire encodings: SSE, NDJSON and plain text.

A stream entry holds ``type``, ``run``, ``seq``, ``ts`` and ``data`` (the payload as one-line JSON).
Clients see each event as one flat JSON object: the stream id as ``id``, those fields, and the
payload's fields.
"""

from __future__ import annotations

import json
import re
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
# Not a stored event: the last frame of a response whose unread events were trimmed away. Its
# code is the one a resume from the same cursor answers with (410).
STREAM_TRUNCATED = "stream.truncated"
CURSOR_TRIMMED = "cursor_trimmed"

_RESERVED = ("id", "type", "run", "seq", "ts")


def dumps_line(value: Any) -> str:
    """One-line JSON.

    ``ensure_ascii`` escapes every non-ASCII character, so no line separator a client might split
    on (``\\u2028``, ``\\x85``, ...) can appear raw inside an SSE ``data:`` line or an NDJSON line.
    """
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


class Event:
    """One event as read back from the stream.

    The payload is kept as the stored one-line JSON (``data_json``) and decoded only when asked
    for (``data``). The encodings are cached on the event, so a stream hub that hands one event
    to a thousand readers decodes and encodes it once.
    """

    __slots__ = ("_data", "_frames", "_order", "data_json", "id", "run", "seq", "ts", "type")

    def __init__(
        self,
        id: str,
        type: str,
        run: str,
        seq: int,
        ts: int,
        data: Mapping[str, Any] | None = None,
        *,
        data_json: str | None = None,
    ) -> None:
        self.id = id
        self.type = type
        self.run = run
        self.seq = seq
        self.ts = ts
        self._data = data
        self.data_json = dumps_line(dict(data or {})) if data_json is None else data_json
        self._frames: dict[str, bytes] = {}
        self._order: tuple[int, int] | None = None

    @property
    def data(self) -> Mapping[str, Any]:
        if self._data is None:
            self._data = json.loads(self.data_json or "{}")
        return self._data

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @property
    def order(self) -> tuple[int, int]:
        """The stream id as ``(ms, seq)``, for comparing positions."""
        if self._order is None:
            ms, _, seq = self.id.partition("-")
            self._order = (int(ms), int(seq))
        return self._order

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        # The payload is a dict (unhashable) and equal payloads can differ in their JSON text, so
        # the hash leaves it out: events equal by __eq__ still hash alike.
        return hash(self._identity())

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, type={self.type!r}, seq={self.seq}, data={self.data_json})"

    def _identity(self) -> tuple[str, str, str, int, int]:
        return (self.id, self.type, self.run, self.seq, self.ts)

    def _key(self) -> tuple[Any, ...]:
        return (*self._identity(), self.data)

    @classmethod
    def from_entry(cls, entry_id: str | bytes, fields: Mapping[Any, Any]) -> Event:
        """Build an event from a raw ``XREAD`` entry (bytes or str fields).

        This runs once per entry read (a catch-up page holds thousands), so it fills the slots
        directly instead of going through ``__init__``: the payload stays the stored text.
        """
        text = fields if isinstance(entry_id, str) else _texts(fields)
        event = cls.__new__(cls)
        event.id = as_text(entry_id)
        event.type = text["type"]
        event.run = text["run"]
        event.seq = int(text["seq"])
        event.ts = int(text["ts"])
        event.data_json = text.get("data") or "{}"
        event._data = None
        event._frames = {}
        event._order = None
        return event

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

    def public_json(self) -> str:
        """``dumps_line(self.to_public())``, built without decoding the payload when possible.

        Writers store the payload with :func:`dumps_line` (compact, ASCII-only), so the flat
        object is the five fixed fields followed by the payload's members, spliced as text. A
        payload that might hold a reserved name at any depth, or that is not in that form, takes
        the slow path; both give the same bytes.
        """
        raw = self.data_json
        if (
            raw[:1] == "{"
            and raw[-1:] == "}"
            and raw.isascii()
            and _RESERVED_MEMBER.search(raw) is None
            and _is_plain(self.type)
            and _is_plain(self.run)
        ):
            head = (
                f'{{"id":"{self.id}","type":"{self.type}","run":"{self.run}",'
                f'"seq":{self.seq},"ts":{self.ts}'
            )
            return head + "}" if raw == "{}" else head + "," + raw[1:]
        return dumps_line(self.to_public())

    def frame(self, media_type: str) -> bytes:
        """This event encoded for one stream format (cached: encoded once for every reader)."""
        encoded = self._frames.get(media_type)
        if encoded is None:
            if media_type == SSE:
                text = sse_event(self)
            elif media_type == NDJSON:
                text = ndjson_event(self)
            else:
                text = text_event(self)
            encoded = self._frames[media_type] = text.encode()
        return encoded


_RESERVED_MEMBER = re.compile("|".join(f'"{name}":' for name in _RESERVED))
# Stream ids, run ids and event types: nothing JSON would escape.
_PLAIN = re.compile(r"[A-Za-z0-9._-]*")
_PLAIN_SEEN: dict[str, bool] = {}  # event types and run ids recur on every event of a run


def _is_plain(value: str) -> bool:
    plain = _PLAIN_SEEN.get(value)
    if plain is None:
        if len(_PLAIN_SEEN) >= 4096:
            _PLAIN_SEEN.clear()
        plain = _PLAIN_SEEN[value] = _PLAIN.fullmatch(value) is not None
    return plain


def _texts(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in fields.items()}


def as_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- Server-Sent Events -----------------------------------------------------------------------


def sse_event(event: Event) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.public_json()}\n\n"


def sse_retry(retry_ms: int) -> str:
    return f"retry: {retry_ms}\n\n"


def sse_keepalive() -> str:
    return ": keep-alive\n\n"


# --- NDJSON -----------------------------------------------------------------------------------


def ndjson_event(event: Event) -> str:
    return event.public_json() + "\n"


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

    def encode(self, event: Event) -> bytes:
        return event.frame(self.media_type)


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


def truncation_notice(media_type: str, last_id: str, resume_cursor: str) -> bytes:
    """The frame that ends a response when events it had not delivered were trimmed away.

    It carries no stream id (in SSE no ``id:`` line), because it is not an entry of the stream: a
    client's last id stays ``last_id``. Resuming from there is ``410 cursor_trimmed``;
    ``resume_cursor`` goes on with the events that are left, accepting the loss.
    """
    message = "Events of this stream were trimmed away before they could be delivered."
    notice = {
        "type": STREAM_TRUNCATED,
        "code": CURSOR_TRIMMED,
        "message": message,
        "last_id": last_id,
        "resume_cursor": resume_cursor,
    }
    if media_type == SSE:
        text = f"event: {STREAM_TRUNCATED}\ndata: {dumps_line(notice)}\n\n"
    elif media_type == NDJSON:
        text = dumps_line(notice) + "\n"
    else:
        text = f"\n[stream truncated: {message}]\n"
    return text.encode()
