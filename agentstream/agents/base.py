"""What every registered agent offers, whatever its kind: a name, a description, a runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from ..agent import AgentRunner
from ..config import Settings

AgentKind = Literal["agentstream", "agent-framework", "openai-agents"]


@dataclass(frozen=True)
class AgentInfo:
    """What ``GET /api/agents`` lists about an agent (and what other surfaces may name it by)."""

    name: str
    description: str
    kind: AgentKind


class AgentDefinition(Protocol):
    """An agent the app registers: ours, or an adapter around another framework's agent."""

    @property
    def info(self) -> AgentInfo: ...

    @property
    def history_max_messages(self) -> int | None:
        """The history bound of this agent; ``None``: the ``HISTORY_MAX_MESSAGES`` setting."""

    def runner(self, settings: Settings) -> AgentRunner:
        """The agent, ready to run one turn (called for every run, inside the run's guard)."""
