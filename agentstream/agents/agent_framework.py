"""Adapter for Microsoft Agent Framework (``agent-framework-core``, the ``agent-framework`` extra).

Register an Agent Framework ``Agent`` (its chat client, instructions, tools and middleware) with
:class:`AgentFrameworkAgent`. Each run streams ``agent.run(messages, stream=True)``; its updates
become this project's events: text, each function call (whole, once its result is in) and its
result, and the usage. The tools run in the entity as they would in the framework (its function
invocation loop, its middleware). The history stays in the chat-completions format every kind of
agent shares, and goes to the agent as the run's messages, so no framework session is kept.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agent_framework import Agent as FrameworkAgent
from agent_framework import Content
from agent_framework import Message as FrameworkMessage

from ..agent import AgentSink, Message
from ..config import ConfigError, Settings
from ..model_client import NOT_CONFIGURED, create_async_model_client
from .base import AgentInfo
from .bridge import AgentEvent, Completed, Text, ToolCall, ToolResult, drive, model_failure


def configured_chat_client(settings: Settings, model: str | None = None) -> Any:
    """A chat-completions client (``agent-framework-openai``) for the endpoint, model and
    credentials the app settings configure, as the travel planner uses them. Without a model
    configured the app does not start (:class:`ConfigError` names the settings)."""
    from agent_framework.openai import OpenAIChatCompletionClient

    if settings.model is None:
        raise ConfigError(NOT_CONFIGURED)
    return OpenAIChatCompletionClient(
        model=model or settings.model.model,
        async_client=create_async_model_client(settings.model),
    )


@dataclass(frozen=True)
class AgentFrameworkAgent:
    """An Agent Framework agent, served like any other. ``name`` (default: the agent's name) is
    the route and entity name."""

    agent: FrameworkAgent[Any]
    name: str | None = None
    description: str | None = None
    history_max_messages: int | None = None

    @property
    def info(self) -> AgentInfo:
        description = self.description
        if description is None:
            description = self.agent.description or ""
        return AgentInfo(self.name or self.agent.name or "", description, "agent-framework")

    def runner(self, settings: Settings) -> _Run:
        return _Run(self.agent)


@dataclass(frozen=True)
class _Run:
    agent: FrameworkAgent[Any]

    def run(self, history: list[Message], user_message: str, sink: AgentSink) -> list[Message]:
        return [*history, *drive(lambda: self._events(history, user_message), sink)]

    async def _events(self, history: list[Message], user_message: str) -> AsyncIterator[AgentEvent]:
        user = {"role": "user", "content": user_message}
        calls = _Calls()
        try:
            stream = self.agent.run(_framework_messages([*history, user]), stream=True)
            async for update in stream:
                for content in update.contents:
                    for event in calls.events(content):
                        yield event
                yield None
            final = await stream.get_final_response()
        except Exception as exc:  # noqa: BLE001 - mapped to a run failure, or re-raised
            raise model_failure(exc) from None
        turn = [user, *_chat_messages(final.messages)]
        yield Completed(_usage(final.usage_details), turn)


class _Calls:
    """Function calls arrive in pieces (parallel calls interleave); each is reported whole when
    its result comes in, followed by the result."""

    def __init__(self) -> None:
        self._calls: dict[Any, dict[str, str]] = {}
        self._by_id: dict[str, dict[str, str]] = {}
        self._latest: dict[str, str] | None = None

    def events(self, content: Content) -> list[AgentEvent]:
        if content.type == "text" and content.text:
            return [Text(content.text)]
        if content.type == "function_call":
            self._add_piece(content)
            return []
        if content.type == "function_result":
            call = self._by_id.get(content.call_id or "", {})
            call_id = content.call_id or ""
            return [
                ToolCall(call_id, call.get("name", ""), call.get("arguments", "")),
                ToolResult(call_id, call.get("name", ""), _result_text(content)),
            ]
        return []

    def _add_piece(self, content: Content) -> None:
        index = (content.additional_properties or {}).get("tool_call_index")
        call = self._calls.get(index) if index is not None else None
        if content.call_id and content.call_id not in self._by_id:
            call = {"name": "", "arguments": ""}
            self._by_id[content.call_id] = call
        elif content.call_id:
            call = self._by_id[content.call_id]
        call = call or self._latest
        if call is None:
            return
        if index is not None:
            self._calls[index] = call
        self._latest = call
        call["name"] += content.name if content.name and not call["name"] else ""
        call["arguments"] += _arguments_text(content.arguments)


def _framework_messages(history: list[Message]) -> list[FrameworkMessage]:
    messages = []
    for message in history:
        role = message.get("role")
        contents: list[Content] = []
        if role in ("user", "assistant") and message.get("content"):
            contents.append(Content.from_text(str(message["content"])))
        for call in message.get("tool_calls") or [] if role == "assistant" else []:
            function = call.get("function") or {}
            contents.append(
                Content.from_function_call(
                    call.get("id") or "",
                    function.get("name") or "",
                    arguments=function.get("arguments") or "{}",
                )
            )
        if role == "tool":
            contents.append(
                Content.from_function_result(
                    message.get("tool_call_id") or "", result=message.get("content") or ""
                )
            )
        if contents:
            messages.append(FrameworkMessage(str(role), contents))
    return messages


def _chat_messages(messages: list[FrameworkMessage]) -> list[Message]:
    """The framework's messages of this turn in the chat-completions format."""
    converted: list[Message] = []
    for message in messages:
        role = str(message.role)
        if role == "tool":
            converted.extend(
                {"role": "tool", "tool_call_id": c.call_id, "content": _result_text(c)}
                for c in message.contents
                if c.type == "function_result"
            )
            continue
        if role != "assistant":
            continue
        text = "".join(c.text or "" for c in message.contents if c.type == "text")
        calls = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": _arguments_text(c.arguments)},
            }
            for c in message.contents
            if c.type == "function_call"
        ]
        chat: Message = {"role": "assistant", "content": text or None}
        if calls:
            chat["tool_calls"] = calls
        if text or calls:
            converted.append(chat)
    return converted


def _arguments_text(arguments: Any) -> str:
    if arguments is None:
        return ""
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _result_text(content: Content) -> str:
    if content.exception and content.result is None:
        # The exception's text stays in the worker: it can carry URLs, keys or data.
        return json.dumps({"error": "the tool failed"})
    result = content.result
    return result if isinstance(result, str) else json.dumps(result, default=str)


def _usage(details: Any) -> dict[str, int] | None:
    if not details:
        return None
    prompt = int(details.get("input_token_count") or 0)
    completion = int(details.get("output_token_count") or 0)
    total = int(details.get("total_token_count") or prompt + completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
