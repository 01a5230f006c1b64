"""Agents of this project's own kind, run as a streaming chat-completions loop with tool calls.

The loop is synchronous (durable entities run on a worker thread) and knows nothing of Redis:
it reports what happens to an :class:`AgentSink`. Model failures become :class:`RunFailure` with a
stable code and a message that is safe to show; the exception text of the library never leaves
this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import openai

from .failures import MODEL_CREDENTIALS_REJECTED, RunFailure
from .tools import Toolbox

logger = logging.getLogger(__name__)

Message = dict[str, Any]


class AgentSink(Protocol):
    """Where the agent reports its output, in order."""

    def text(self, delta: str) -> None: ...

    def tick(self) -> None:
        """Called for every chunk from the model, text or not (time-based flushing)."""

    def tool_call(self, call_id: str, name: str, arguments: str) -> None: ...

    def tool_result(self, call_id: str, name: str, result: str) -> None: ...

    def completed(
        self, finish_reason: str, usage: dict[str, int] | None, turn: list[Message]
    ) -> None:
        """The answer is complete; ``turn`` is what this turn adds to the history."""


FAILURE_MESSAGES = {
    "model_unavailable": "The language model is unavailable right now. Please try again shortly.",
    "model_rejected": "The language model rejected the request.",
    "model_interrupted": "The language model's answer was cut off. Please try again.",
    "model_timeout": "The language model did not answer in time. Please try again.",
    "content_filtered": "The request or the answer was blocked by the content filter.",
    "tool_rounds_exhausted": "The agent used too many tool rounds without finishing.",
}


def failure(code: str) -> RunFailure:
    return RunFailure(code, FAILURE_MESSAGES[code])


@dataclass
class _Turn:
    """What one streamed model response contained."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None

    def assistant_message(self) -> Message:
        message: Message = {"role": "assistant", "content": "".join(self.text) or None}
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
                }
                for _, call in sorted(self.calls.items())
            ]
        return message


class AgentRunner(Protocol):
    """One kind of agent, ready to answer: what the conversation entity runs for each message."""

    def run(self, history: list[Message], user_message: str, sink: AgentSink) -> list[Message]:
        """Answer ``user_message``; return ``history`` extended with this turn's messages.

        History is in the chat-completions message format for every kind of agent, so it is
        kept and bounded the same way whatever runs the turn.
        """


Instructions = Callable[[list[Message]], str]


class ChatCompletionsLoop:
    """Runs an agent of our own kind: the model streams, tools run, until the model answers."""

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        toolbox: Toolbox,
        *,
        instructions: Instructions,
        max_tool_rounds: int,
        model_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._model = model
        self._toolbox = toolbox
        self._instructions = instructions
        self._max_tool_rounds = max_tool_rounds
        self._model_settings = dict(model_settings or {})

    def run(self, history: list[Message], user_message: str, sink: AgentSink) -> list[Message]:
        """Answer one user message; return the history extended with this turn's messages."""
        conversation = [*history, {"role": "user", "content": user_message}]
        usage: dict[str, int] = {}
        rounds = 0
        while True:
            turn = self._stream_turn(conversation, sink, usage)
            assistant = turn.assistant_message()
            conversation.append(assistant)
            if turn.finish_reason == "content_filter":
                raise failure("content_filtered")
            if not turn.calls:
                sink.completed(
                    turn.finish_reason or "stop", usage or None, conversation[len(history) :]
                )
                return conversation
            if rounds >= self._max_tool_rounds:
                raise failure("tool_rounds_exhausted")
            rounds += 1
            conversation.extend(self._run_tools(assistant["tool_calls"], sink))

    def _run_tools(self, tool_calls: list[Message], sink: AgentSink) -> Iterator[Message]:
        for call in tool_calls:
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            sink.tool_call(call["id"], name, arguments)
            result = self._toolbox.call(name, arguments)
            sink.tool_result(call["id"], name, result)
            yield {"role": "tool", "tool_call_id": call["id"], "content": result}

    def _stream_turn(
        self, conversation: list[Message], sink: AgentSink, usage: dict[str, int]
    ) -> _Turn:
        request: dict[str, Any] = {
            **self._model_settings,
            "model": self._model,
            "messages": [
                {"role": "system", "content": self._instructions(list(conversation))},
                *conversation,
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        schemas = self._toolbox.schemas()
        if schemas:
            request["tools"] = schemas
        stream = self._open(request)
        turn = _Turn()
        try:
            for chunk in _guarded(stream):
                if chunk.usage is not None:
                    _add_usage(usage, chunk.usage)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    if delta is not None and delta.content:
                        turn.text.append(delta.content)
                        sink.text(delta.content)
                    for call_delta in (delta.tool_calls if delta is not None else None) or []:
                        _merge_call(turn.calls, call_delta)
                    if choice.finish_reason:
                        turn.finish_reason = choice.finish_reason
                sink.tick()
        finally:
            stream.close()
        return turn

    def _open(self, request: dict[str, Any]) -> Any:
        """Start the streamed response; the client has already retried what is retryable."""
        try:
            return self._client.chat.completions.create(**request)
        except openai.APITimeoutError:
            raise failure("model_timeout") from None
        except openai.BadRequestError as exc:
            if is_content_filter(exc):
                raise failure("content_filtered") from None
            logger.warning("model rejected the request: HTTP %s", exc.status_code)
            raise failure("model_rejected") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            logger.warning("model refused the app's credentials: HTTP %s", exc.status_code)
            raise RunFailure("model_rejected", MODEL_CREDENTIALS_REJECTED) from None
        except openai.APIStatusError as exc:
            logger.warning("model request failed: HTTP %s", exc.status_code)
            retryable = exc.status_code == 429 or exc.status_code >= 500
            raise failure("model_unavailable" if retryable else "model_rejected") from None
        except openai.APIConnectionError:
            logger.warning("model unreachable")
            raise failure("model_unavailable") from None


def _guarded(stream: Iterable[Any]) -> Iterator[Any]:
    """Chunks of the stream, with transport failures turned into run failures.

    Only the stream's own ``next()`` is guarded: exceptions raised by the sink while a chunk is
    handled (a cancel, a Redis error) pass through untouched.
    """
    chunks = iter(stream)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except (openai.APITimeoutError, httpx.TimeoutException):
            raise failure("model_timeout") from None
        except (openai.APIError, httpx.HTTPError) as exc:
            logger.warning("model stream broke: %s", type(exc).__name__)
            raise failure("model_interrupted") from None
        yield chunk


def _merge_call(calls: dict[int, dict[str, Any]], call_delta: Any) -> None:
    """Reassemble a tool call whose id, name and arguments arrive spread over chunks."""
    call = calls.setdefault(call_delta.index, {"id": "", "name": "", "arguments": []})
    if call_delta.id:
        call["id"] = call_delta.id
    function = call_delta.function
    if function is not None:
        if function.name:
            call["name"] += function.name
        if function.arguments:
            call["arguments"].append(function.arguments)


def _add_usage(total: dict[str, int], usage: Any) -> None:
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[name] = total.get(name, 0) + int(getattr(usage, name, 0) or 0)


def is_content_filter(exc: openai.BadRequestError) -> bool:
    body = exc.body if isinstance(exc.body, dict) else {}
    return exc.code == "content_filter" or body.get("code") == "content_filter"
