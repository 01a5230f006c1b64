"""Adapter for the OpenAI Agents SDK (``openai-agents``, the ``openai-agents`` extra).

Register an SDK ``Agent`` (instructions, ``function_tool``s, handoffs) with
:class:`OpenAIAgentsAgent`. Each run goes through ``Runner.run_streamed`` on a chat-completions
model at the endpoint the app settings configure (``OpenAIChatCompletionsModel``, for the agent
and every agent it hands off to), with tracing off; its stream events become this project's:
text deltas, tool calls and their outputs, and handoffs as the tool calls they are in the SDK.
The history stays in the chat-completions format every kind of agent shares.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agents import (
    Agent as SdkAgent,
)
from agents import (
    MaxTurnsExceeded,
    OpenAIChatCompletionsModel,
    RawResponsesStreamEvent,
    RunConfig,
    RunItemStreamEvent,
    Runner,
)
from agents import ModelSettings as SdkModelSettings
from agents.models.chatcmpl_converter import Converter
from openai.types.responses import ResponseTextDeltaEvent

from ..agent import AgentSink, Message, failure
from ..config import ModelSettings, Settings
from ..model_client import configured_model, create_async_model_client
from .base import AgentInfo
from .bridge import AgentEvent, Completed, Text, ToolCall, ToolResult, drive, model_failure

_CALL_ITEMS = {"tool_called", "handoff_requested"}
_OUTPUT_ITEMS = {"tool_output", "handoff_occured", "handoff_occurred"}


@dataclass(frozen=True)
class OpenAIAgentsAgent:
    """An OpenAI Agents SDK agent, served like any other.

    ``name`` (default: the SDK agent's name) is the route and entity name. ``model`` is the
    deployment or model name (default: the one the app settings configure). ``max_turns`` bounds
    the SDK's model calls per message (default: ``MAX_TOOL_ROUNDS`` + 1).
    """

    agent: SdkAgent[Any]
    name: str | None = None
    description: str | None = None
    model: str | None = None
    max_turns: int | None = None
    history_max_messages: int | None = None

    @property
    def info(self) -> AgentInfo:
        description = self.description
        if description is None:
            description = self.agent.handoff_description or ""
        return AgentInfo(self.name or self.agent.name, description, "openai-agents")

    def runner(self, settings: Settings) -> _Run:
        model = configured_model(settings)
        return _Run(self, model, self.model or model.model, settings.max_tool_rounds)


@dataclass(frozen=True)
class _Run:
    definition: OpenAIAgentsAgent
    endpoint: ModelSettings
    model: str
    max_tool_rounds: int

    def run(self, history: list[Message], user_message: str, sink: AgentSink) -> list[Message]:
        return [*history, *drive(lambda: self._events(history, user_message), sink)]

    async def _events(self, history: list[Message], user_message: str) -> AsyncIterator[AgentEvent]:
        client = create_async_model_client(self.endpoint)
        user = {"role": "user", "content": user_message}
        max_turns = self.definition.max_turns or self.max_tool_rounds + 1
        config = RunConfig(
            model=OpenAIChatCompletionsModel(model=self.model, openai_client=client),
            model_settings=SdkModelSettings(include_usage=True),
            tracing_disabled=True,
        )
        names: dict[str, str] = {}
        # Plain dicts in the SDK's input shape (its TypedDicts are not checked at run time).
        items: list[Any] = [*_input_items(history), user]
        result = Runner.run_streamed(
            self.definition.agent,
            items,
            max_turns=max_turns,
            run_config=config,
        )
        try:
            try:
                async for event in result.stream_events():
                    yield _event(event, names)
            except MaxTurnsExceeded:
                raise failure("tool_rounds_exhausted") from None
            except Exception as exc:  # noqa: BLE001 - mapped to a run failure, or re-raised
                raise model_failure(exc) from None
            items = [item.to_input_item() for item in result.new_items]
            turn = [user, *Converter.items_to_messages(items)]
            yield Completed(_usage(result.context_wrapper.usage), _plain(turn))
        finally:
            if not result.is_complete:
                result.cancel()  # the entity stopped reading: a cancel, or Redis gone
            await client.close()


def _event(event: Any, names: dict[str, str]) -> AgentEvent:
    if isinstance(event, RawResponsesStreamEvent):
        data = event.data
        if isinstance(data, ResponseTextDeltaEvent) and data.delta:
            return Text(data.delta)
        return None
    if not isinstance(event, RunItemStreamEvent):
        return None
    raw = event.item.raw_item
    if event.name in _CALL_ITEMS:
        call_id, name = _get(raw, "call_id"), _get(raw, "name")
        names[call_id] = name
        return ToolCall(call_id, name, _get(raw, "arguments"))
    if event.name in _OUTPUT_ITEMS:
        call_id = _get(raw, "call_id")
        output = _get(raw, "output")
        return ToolResult(
            call_id, names.get(call_id, ""), output if isinstance(output, str) else str(output)
        )
    return None


def _get(raw: Any, name: str) -> Any:
    return raw.get(name, "") if isinstance(raw, dict) else getattr(raw, name, "")


def _input_items(history: list[Message]) -> list[dict[str, Any]]:
    """Chat-completions history as the SDK's input items."""
    items: list[dict[str, Any]] = []
    for message in history:
        role = message.get("role")
        if role in ("user", "assistant") and message.get("content"):
            items.append({"role": role, "content": message["content"]})
        for call in message.get("tool_calls") or [] if role == "assistant" else []:
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments") or "{}",
                }
            )
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": message.get("content") or "",
                }
            )
    return items


def _plain(messages: list[Any]) -> list[Message]:
    """The converter's messages as plain JSON-ready dicts (the entity state is JSON)."""
    return [dict(message) for message in messages]


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None or not usage.total_tokens:
        return None
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
