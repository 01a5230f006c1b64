"""An OpenAI Agents SDK agent served by agentstream: a packing assistant that can hand off to a
local guide. Needs the ``openai-agents`` extra."""

from __future__ import annotations

from agents import Agent, function_tool

from agentstream.agents.openai_agents import OpenAIAgentsAgent


@function_tool
def packing_list(destination: str, days: int) -> str:
    """What to pack for a trip.

    Args:
        destination: Where the trip goes.
        days: How many days it lasts.
    """
    shirts = min(days, 7)
    return f"For {days} days in {destination}: {shirts} shirts, a rain jacket, walking shoes."


@function_tool
def local_tip(city: str) -> str:
    """A tip only locals know.

    Args:
        city: The city.
    """
    return f"In {city}, lunch is the cheapest good meal of the day."


local_guide = Agent(
    name="local_guide",
    handoff_description="Knows the city: neighbourhoods, food, customs.",
    instructions="You are a local guide. Give short, concrete tips.",
    tools=[local_tip],
)

packing_assistant = OpenAIAgentsAgent(
    Agent(
        name="packer",
        instructions="You help travellers pack. Hand off questions about the city itself.",
        tools=[packing_list],
        handoffs=[local_guide],
    ),
    description="Packing lists for a trip; hands city questions to a local guide.",
)
