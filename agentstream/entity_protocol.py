"""Names the HTTP side and the conversation entity share: the entity and its operations.

They live apart from the entity's code so the HTTP functions can signal the entity without
importing the agent, the model client and the tools.
"""

ENTITY_NAME = "travelplanner"
RUN_OPERATION = "run"
DELETE_OPERATION = "delete"

__all__ = ["DELETE_OPERATION", "ENTITY_NAME", "RUN_OPERATION"]
