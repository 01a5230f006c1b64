"""Names the HTTP side and the conversation entities share: the entities' operations.

Each agent is its own entity (entity name = agent name, see ``agentstream.agents.registry``).
"""

RUN_OPERATION = "run"
DELETE_OPERATION = "delete"

__all__ = ["DELETE_OPERATION", "RUN_OPERATION"]
