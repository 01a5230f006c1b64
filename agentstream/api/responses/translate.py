"""A run's stored events as OpenAI Responses objects and stream events: a pure translation.

Every reader of a response, live or late, feeds the same stored events through a
:class:`Translator` from the run's first event (``run.queued``), so each gets identical Responses
events with identical ``sequence_number``s: the numbers exist by construction, and nothing about
them is stored. A reader resuming with ``starting_after=N`` translates from the start and drops the
events up to ``N``.

The mapping:

- ``run.queued`` -> ``response.created``; the first ``run.started`` -> ``response.in_progress``;
- text -> a ``message`` item (``output_item.added``, ``content_part.added``, ``output_text.delta``
  ...), closed by ``output_text.done``, ``content_part.done`` and ``output_item.done`` before a
  tool call or the end;
- ``tool.call``/``tool.result`` -> an ``mcp_call`` item (name and arguments when added, ``output``
  when done) with ``mcp_call.in_progress``/``mcp_call.completed``: the server ran the tool, so it is
  never a ``function_call``, which would ask the client to run it;
- ``run.restarted`` closes the open items as ``incomplete``;
- ``run.completed`` -> ``response.completed``; ``run.failed`` -> ``response.failed`` (error code
  ``server_error``, the project's code in the message); ``run.cancelled`` ->
  ``response.incomplete`` with status ``cancelled``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...events import (
    MESSAGE_DELTA,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_RESTARTED,
    RUN_STARTED,
    TOOL_CALL,
    TOOL_RESULT,
    Event,
)
from ...streamlog.run_records import RunRecord

RESPONSE_PREFIX = "resp_"
CONVERSATION_PREFIX = "conv_"
# What an mcp_call item names as its server: the tools are the agent's own.
TOOL_SERVER_LABEL = "agentstream"

FINISHED = frozenset({"completed", "failed", "cancelled"})
# The error code of every failed Response (OpenAI's); the run's own code leads its message.
SERVER_ERROR = "server_error"


def response_id(run_id: str) -> str:
    return RESPONSE_PREFIX + run_id


def conversation_ref(conversation_id: str) -> str:
    return CONVERSATION_PREFIX + conversation_id


class BrokenRun(Exception):
    """The run's stored events have a hole (the stream's ``MAXLEN`` cap trimmed some away):
    translating on would hand out wrong sequence numbers."""


@dataclass(frozen=True)
class ResponseMeta:
    """What a Response shows that the run's events do not hold: fixed when it was created."""

    run_id: str
    conversation_id: str
    model: str
    background: bool
    previous_response_id: str | None = None


class Translator:
    """Feed a run's events in order; get the Responses events and the current Response."""

    def __init__(self, meta: ResponseMeta, *, contiguous: bool = True) -> None:
        """``contiguous=False`` takes a run record's events, whose merged text skips seqs."""
        self.meta = meta
        self._contiguous = contiguous
        self._next_sequence = 0
        self._next_seq = 0  # the stored seq the run's next event must have
        self._status = "queued"
        self._created_at = 0
        self._completed_at: int | None = None
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._message: dict[str, Any] | None = None  # the open message item
        self._calls: dict[str, dict[str, Any]] = {}  # open mcp_call items by call id
        self._usage: dict[str, Any] | None = None
        self._error: dict[str, str] | None = None

    @property
    def finished(self) -> bool:
        return self._status in FINISHED

    def response(self) -> dict[str, Any]:
        """The Response as these events leave it (a fresh copy)."""
        meta = self.meta
        return {
            "id": response_id(meta.run_id),
            "object": "response",
            "created_at": self._created_at,
            "status": self._status,
            "background": meta.background,
            "model": meta.model,
            "output": copy.deepcopy(self._output),
            "usage": copy.deepcopy(self._usage),
            "error": copy.deepcopy(self._error),
            "incomplete_details": None,
            "completed_at": self._completed_at,
            "previous_response_id": meta.previous_response_id,
            "conversation": {"id": conversation_ref(meta.conversation_id)},
            "instructions": None,
            "metadata": {},
            "parallel_tool_calls": False,
            "temperature": None,
            "top_p": None,
            "tool_choice": "auto",
            "tools": [],
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "store": True,
        }

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The Responses events one stored event becomes (none for some).

        Raises :class:`BrokenRun` when the event does not follow the run's previous one.
        """
        if event.run != self.meta.run_id or self.finished:
            return []
        if self._contiguous and event.seq != self._next_seq:
            raise BrokenRun(f"seq {event.seq} after {self._next_seq - 1}")
        self._next_seq = event.seq + 1
        handler = _HANDLERS.get(event.type)
        return handler(self, event) if handler else []

    # --- one method per stored event type -----------------------------------------------------

    def _queued(self, event: Event) -> list[dict[str, Any]]:
        self._created_at = event.ts // 1000
        return [self._lifecycle("response.created")]

    def _run_started(self, event: Event) -> list[dict[str, Any]]:
        if self._started:
            return []  # a later attempt: the response was in progress already
        self._started = True
        self._status = "in_progress"
        return [self._lifecycle("response.in_progress")]

    def _delta(self, event: Event) -> list[dict[str, Any]]:
        text = str(event.data.get("text", ""))
        if not text:
            return []
        out = [] if self._message else self._open_message(event.seq)
        message = self._message
        assert message is not None
        message["content"][0]["text"] += text
        out.append(
            self._emit(
                "response.output_text.delta",
                item_id=message["id"],
                output_index=self._index(message),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _tool_call(self, event: Event) -> list[dict[str, Any]]:
        out = self._close_message("completed")
        item = {
            "id": f"mcp_{self.meta.run_id}_{event.seq}",
            "type": "mcp_call",
            "server_label": TOOL_SERVER_LABEL,
            "name": str(event.data.get("name", "")),
            "arguments": str(event.data.get("arguments", "")),
            "output": None,
            "status": "in_progress",
        }
        self._output.append(item)
        self._calls[str(event.data.get("call_id", ""))] = item
        out.append(self._item_event("response.output_item.added", item))
        out.append(
            self._emit(
                "response.mcp_call.in_progress", item_id=item["id"], output_index=self._index(item)
            )
        )
        return out

    def _tool_result(self, event: Event) -> list[dict[str, Any]]:
        item = self._calls.pop(str(event.data.get("call_id", "")), None)
        if item is None:
            return []
        item["output"] = str(event.data.get("result", ""))
        item["status"] = "completed"
        return [
            self._emit(
                "response.mcp_call.completed", item_id=item["id"], output_index=self._index(item)
            ),
            self._item_event("response.output_item.done", item),
        ]

    def _restarted(self, event: Event) -> list[dict[str, Any]]:
        return self._close_open("incomplete")

    def _completed(self, event: Event) -> list[dict[str, Any]]:
        out = self._close_message("completed")
        out.extend(self._close_open("incomplete"))
        self._usage = _usage(event.data.get("usage"))
        return [*out, self._finish(event, "completed", "response.completed")]

    def _failed(self, event: Event) -> list[dict[str, Any]]:
        out = self._close_open("incomplete")
        code = str(event.data.get("code", "internal_error"))
        message = str(event.data.get("message", ""))
        self._error = {"code": SERVER_ERROR, "message": f"{code}: {message}"}
        return [*out, self._finish(event, "failed", "response.failed")]

    def _cancelled(self, event: Event) -> list[dict[str, Any]]:
        out = self._close_open("incomplete")
        return [*out, self._finish(event, "cancelled", "response.incomplete")]

    # --- helpers ------------------------------------------------------------------------------

    def _finish(self, event: Event, status: str, event_type: str) -> dict[str, Any]:
        self._status = status
        self._completed_at = event.ts // 1000
        return self._lifecycle(event_type)

    def _emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        emitted = {"type": event_type, "sequence_number": self._next_sequence, **fields}
        self._next_sequence += 1
        return emitted

    def _lifecycle(self, event_type: str) -> dict[str, Any]:
        return self._emit(event_type, response=self.response())

    def _item_event(self, event_type: str, item: dict[str, Any]) -> dict[str, Any]:
        return self._emit(event_type, output_index=self._index(item), item=copy.deepcopy(item))

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, known in enumerate(self._output) if known is item)

    def _open_message(self, seq: int) -> list[dict[str, Any]]:
        message: dict[str, Any] = {
            "id": f"msg_{self.meta.run_id}_{seq}",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        self._output.append(message)
        self._message = message
        added = self._item_event("response.output_item.added", message)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        message["content"].append(part)
        return [
            added,
            self._emit(
                "response.content_part.added",
                item_id=message["id"],
                output_index=self._index(message),
                content_index=0,
                part=copy.deepcopy(part),
            ),
        ]

    def _close_message(self, status: str) -> list[dict[str, Any]]:
        message = self._message
        if message is None:
            return []
        self._message = None
        index = self._index(message)
        part = message["content"][0]
        message["status"] = status
        return [
            self._emit(
                "response.output_text.done",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            ),
            self._emit(
                "response.content_part.done",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                part=copy.deepcopy(part),
            ),
            self._item_event("response.output_item.done", message),
        ]

    def _close_open(self, status: str) -> list[dict[str, Any]]:
        """Close the open message and tool calls, oldest first."""
        out = self._close_message(status)
        for item in self._calls.values():
            item["status"] = status
            out.append(self._item_event("response.output_item.done", item))
        self._calls.clear()
        return out


_HANDLERS = {
    RUN_QUEUED: Translator._queued,
    RUN_STARTED: Translator._run_started,
    MESSAGE_DELTA: Translator._delta,
    TOOL_CALL: Translator._tool_call,
    TOOL_RESULT: Translator._tool_result,
    RUN_RESTARTED: Translator._restarted,
    RUN_COMPLETED: Translator._completed,
    RUN_FAILED: Translator._failed,
    RUN_CANCELLED: Translator._cancelled,
}


def _usage(usage: Any) -> dict[str, Any] | None:
    """The run's token counts in the Responses shape (no cached or reasoning tokens are known)."""
    if not isinstance(usage, dict):
        return None
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": int(usage.get("total_tokens") or 0),
    }


def translate(
    meta: ResponseMeta, events: Iterable[Event]
) -> tuple[list[dict[str, Any]], Translator]:
    """The Responses events of ``events``, and the translator (its ``response()``) after them."""
    translator = Translator(meta)
    out: list[dict[str, Any]] = []
    for event in events:
        out.extend(translator.feed(event))
    return out, translator


def recorded_response(meta: ResponseMeta, record: RunRecord) -> dict[str, Any]:
    """The finished Response from the run's record: the same as from its stored events, because
    the record only merges consecutive text, which the translation concatenates anyway."""
    translator = Translator(meta, contiguous=False)
    for event in record.events:
        translator.feed(event)
    return translator.response()
