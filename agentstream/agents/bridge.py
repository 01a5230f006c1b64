"""What the adapters share: running another framework's async agent from the entity's thread.

Entities are synchronous and run on the worker's threads. The frameworks' agents are async, and
their HTTP clients belong to the event loop they first ran on, so every adapted run goes to one
event loop per process, on its own thread. The adapter's async generator turns the framework's
stream into :data:`AgentEvent` values; the entity's thread takes them from a queue and hands them
to the sink, so the loop never waits on Redis and a cancel raised by the sink stops the run there.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from ..agent import AgentSink, Message, failure, is_content_filter
from ..failures import RunFailure


@dataclass(frozen=True)
class Text:
    delta: str


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    result: str


@dataclass(frozen=True)
class Completed:
    usage: dict[str, int] | None
    turn: list[Message]  # the turn's messages in the chat-completions format, user message first


AgentEvent = Text | ToolCall | ToolResult | Completed | None  # None: a chunk with nothing to show

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="adapted-agents", daemon=True).start()
        return _loop


def drive(make_events: Callable[[], AsyncIterator[AgentEvent]], sink: AgentSink) -> list[Message]:
    """Run the adapter's event stream on the shared loop; report each event to ``sink`` from
    this thread. Returns the turn's messages (the user message first). Whatever the sink raises
    stops the run."""
    turn: list[Message] | None = None
    for event in _iterate_in_loop(make_events):
        if isinstance(event, Text):
            sink.text(event.delta)
        elif isinstance(event, ToolCall):
            sink.tool_call(event.call_id, event.name, event.arguments)
        elif isinstance(event, ToolResult):
            sink.tool_result(event.call_id, event.name, event.result)
        elif isinstance(event, Completed):
            sink.completed("stop", event.usage, event.turn)
            turn = event.turn
        sink.tick()
    if turn is None:
        raise RunFailure("no_result", "The agent ended without a result.")
    return turn


_END = object()


def _iterate_in_loop(make_events: Callable[[], AsyncIterator[Any]]) -> Iterator[Any]:
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue()

    async def pump() -> None:
        try:
            async for event in make_events():
                handoff.put((True, event))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the entity's thread as is
            handoff.put((False, exc))
            return
        handoff.put((True, _END))

    running = asyncio.run_coroutine_threadsafe(pump(), _shared_loop())
    try:
        while True:
            ok, value = handoff.get()
            if not ok:
                raise value
            if value is _END:
                return
            yield value
    finally:
        running.cancel()  # the sink raised (a cancel, Redis gone): stop the framework's run


def model_failure(exc: BaseException) -> BaseException:
    """The run failure a framework's exception stands for, found along its causes (frameworks
    wrap the ``openai`` and ``httpx`` errors); other exceptions are returned unchanged."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RunFailure):
            return current
        code = _code_of(current)
        if code is not None:
            return failure(code)
        current = current.__cause__ or current.__context__
    return exc


def _code_of(exc: BaseException) -> str | None:
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return "model_timeout"
    if isinstance(exc, openai.BadRequestError):
        return "content_filtered" if is_content_filter(exc) else "model_rejected"
    if isinstance(exc, openai.APIStatusError):
        retryable = exc.status_code == 429 or exc.status_code >= 500
        return "model_unavailable" if retryable else "model_rejected"
    if isinstance(exc, openai.APIConnectionError):
        return "model_unavailable"
    if isinstance(exc, openai.APIError | httpx.HTTPError):
        return "model_interrupted"
    return None
