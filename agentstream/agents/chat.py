"""Agents of this project's own kind: instructions, tools and model settings, run by the
chat-completions loop of :mod:`agentstream.agent`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from ..agent import ChatCompletionsLoop, Message
from ..config import Settings
from ..model_client import shared_model_client
from ..tools import FunctionTool, Toolbox
from ..tools.function_tool import as_tool
from .base import AgentInfo


@dataclass(frozen=True)
class Agent:
    """An agent of our own kind.

    ``instructions`` is the system prompt, or a function of the conversation so far (the chat
    messages, the new user message last) that returns it. ``tools`` are plain functions (sync or
    async) or :func:`agentstream.tools.tool` objects. ``model`` is the deployment or model name
    (``None``: the one the app settings configure); ``model_settings`` go into every request
    (``temperature``, ``max_tokens``, ...). ``max_tool_rounds`` and ``history_max_messages``
    default to the ``MAX_TOOL_ROUNDS`` and ``HISTORY_MAX_MESSAGES`` settings.
    """

    name: str
    instructions: str | Callable[[list[Message]], str]
    description: str = ""
    tools: Sequence[FunctionTool | Callable[..., Any]] = ()
    model: str | None = None
    model_settings: Mapping[str, Any] = field(default_factory=dict)
    max_tool_rounds: int | None = None
    history_max_messages: int | None = None

    def __post_init__(self) -> None:
        # Schemas are built (and bad signatures reported) when the app starts, not at a call.
        object.__setattr__(self, "tools", tuple(as_tool(t) for t in self.tools))

    @property
    def info(self) -> AgentInfo:
        return AgentInfo(self.name, self.description, "agentstream")

    def runner(self, settings: Settings) -> ChatCompletionsLoop:
        client, configured_model = shared_model_client(settings)
        return self.bind(client, self.model or configured_model, settings)

    def bind(self, client: openai.OpenAI, model: str, settings: Settings) -> ChatCompletionsLoop:
        """The agent on a given client (the process-wide one, or a test's)."""
        instructions = self.instructions
        return ChatCompletionsLoop(
            client,
            model,
            Toolbox.enabled(self.tools),  # type: ignore[arg-type]
            instructions=instructions if callable(instructions) else lambda _: instructions,
            max_tool_rounds=self.max_tool_rounds or settings.max_tool_rounds,
            model_settings=self.model_settings,
        )
