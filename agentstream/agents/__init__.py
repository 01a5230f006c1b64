"""Agents: our own kind and the registry (``agentstream.functions`` serves them).

Adapters for other frameworks (optional extras) are imported from their own modules:
``agentstream.agents.openai_agents`` and ``agentstream.agents.agent_framework``.
"""

from .base import AgentDefinition, AgentInfo, AgentKind
from .chat import Agent
from .registry import InvalidAgents, find_agent, registered_agents

__all__ = [
    "Agent",
    "AgentDefinition",
    "AgentInfo",
    "AgentKind",
    "InvalidAgents",
    "find_agent",
    "registered_agents",
]
