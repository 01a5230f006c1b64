"""The app's agents by name: which exist, and what each is.

``function_app.py`` fills the registry once at start-up
(:func:`agentstream.functions.serve_agents`); the HTTP side looks names up here. Names are checked
when registered: route- and entity-safe (Durable matches entity names case-insensitively, so names
are lowercase) and unique.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .base import AgentDefinition, AgentInfo

AGENT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,47}")


class InvalidAgents(ValueError):
    """The app's agent declarations cannot be served (a bad or repeated name, no agents)."""


class AgentRegistry:
    def __init__(self, agents: Iterable[AgentDefinition] = ()) -> None:
        self._agents: dict[str, AgentDefinition] = {}
        self.add(agents)

    def add(self, agents: Iterable[AgentDefinition]) -> None:
        """Add agents, checking each name; nothing is added when one is refused."""
        added = dict(self._agents)
        for agent in agents:
            name = agent.info.name
            if not isinstance(name, str) or not AGENT_NAME.fullmatch(name):
                raise InvalidAgents(
                    f"agent name {name!r}: use 1 to 48 lowercase letters, digits, '-' or '_', "
                    "starting with a letter"
                )
            if name in added:
                raise InvalidAgents(f"two agents are called {name!r}")
            added[name] = agent
        self._agents = added

    def find(self, name: str) -> AgentDefinition | None:
        """The agent called ``name`` (case-insensitive, as entity names are), or ``None``."""
        return self._agents.get(name.lower())

    def infos(self) -> list[AgentInfo]:
        """Every agent, in the order the app declared them."""
        return [agent.info for agent in self._agents.values()]


_registry = AgentRegistry()


def app_registry() -> AgentRegistry:
    """The registry of the app's agents, which :func:`agentstream.functions.serve_agents` fills."""
    return _registry


def registered_agents() -> list[AgentInfo]:
    """The app's agents: name, description, kind."""
    return _registry.infos()


def find_agent(name: str) -> AgentDefinition | None:
    return _registry.find(name)
