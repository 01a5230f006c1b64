"""Serves the app's agents: one durable entity per agent (entity name = agent name)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import azure.durable_functions as df

from . import conversation
from .agents.base import AgentDefinition
from .agents.registry import InvalidAgents, app_registry


def serve_agents(app: df.DFApp, agents: Sequence[AgentDefinition]) -> None:
    """Check the agents' names, register an entity function for each, and add them to the agents
    the HTTP routes know. Raises :class:`InvalidAgents` at start-up for a bad declaration (a bad
    or repeated name, also across calls)."""
    if not agents:
        raise InvalidAgents("declare at least one agent")
    app_registry().add(agents)
    for agent in agents:
        # A name another function already has is refused by azure-functions at indexing.
        app.entity_trigger(context_name="context", entity_name=agent.info.name)(
            _entity_function(agent)
        )


def _entity_function(agent: AgentDefinition) -> Callable[[df.DurableEntityContext], None]:
    def entity(context: df.DurableEntityContext) -> None:
        conversation.handle_operation(context, agent)

    # The function's name is the Functions function name: the agent's, as the entity's.
    entity.__name__ = entity.__qualname__ = agent.info.name
    return entity
