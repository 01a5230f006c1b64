"""A Microsoft Agent Framework agent served by agentstream: a travel budget helper. Needs the
``agent-framework`` extra."""

from __future__ import annotations

from typing import Annotated, Literal

from agent_framework import Agent, tool
from pydantic import Field

from agentstream.agents.agent_framework import AgentFrameworkAgent, configured_chat_client
from agentstream.config import get_settings

RATES_TO_EUR = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}


@tool
def convert_currency(
    amount: Annotated[float, Field(description="How much money", ge=0)],
    currency: Annotated[Literal["USD", "GBP", "EUR"], Field(description="Its currency")],
) -> str:
    """Convert an amount of money to euros."""
    return f"{amount:.2f} {currency} is {amount * RATES_TO_EUR[currency]:.2f} EUR"


budget_helper = AgentFrameworkAgent(
    Agent(
        client=configured_chat_client(get_settings()),
        name="budget",
        description="Converts a travel budget to euros.",
        instructions="You help travellers plan a budget. Convert amounts with your tool.",
        tools=[convert_currency],
    )
)
