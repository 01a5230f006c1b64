"""The agent registry: names checked at start-up, one entity per agent, unknown names refused."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func
import pytest

from agentstream.agents import Agent, InvalidAgents
from agentstream.agents import registry as registry_module
from agentstream.agents.registry import AgentRegistry
from agentstream.functions import UNROUTED_FUNCTION, serve_agents


def agent(name: str, description: str = "") -> Agent:
    return Agent(name=name, instructions="Be brief.", description=description)


@pytest.mark.parametrize("name", ["", "Travel", "9lives", "has space", "a/b", "x" * 49, "é"])
def test_route_or_entity_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidAgents, match="lowercase letters"):
        AgentRegistry([agent(name)])


def test_a_repeated_name_is_refused() -> None:
    with pytest.raises(InvalidAgents, match="two agents are called 'helper'"):
        AgentRegistry([agent("helper"), agent("helper")])


def test_names_are_found_case_insensitively_and_listed_in_order() -> None:
    registry = AgentRegistry([agent("b-agent", "second"), agent("a_agent", "first")])
    assert registry.find("B-Agent") is not None
    assert registry.find("nobody") is None
    assert [(i.name, i.description, i.kind) for i in registry.infos()] == [
        ("b-agent", "second", "agentstream"),
        ("a_agent", "first", "agentstream"),
    ]


@pytest.fixture
def empty_registry(monkeypatch: pytest.MonkeyPatch) -> AgentRegistry:
    fresh = AgentRegistry()
    monkeypatch.setattr(registry_module, "_registry", fresh)
    return fresh


def test_each_agent_gets_its_own_entity_function(empty_registry: AgentRegistry) -> None:
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    serve_agents(app, [agent("one"), agent("two-2")])
    serve_agents(app, [agent("three")])
    assert [info.name for info in empty_registry.infos()] == ["one", "two-2", "three"]
    functions = {f.get_function_name(): f for f in app.get_functions()}
    # And one catch-all HTTP function, however many times agents are served.
    assert set(functions) == {"one", "two-2", "three", UNROUTED_FUNCTION}
    assert functions.pop(UNROUTED_FUNCTION).get_trigger().route == "{*path}"
    for name, function in functions.items():
        trigger = function.get_trigger()
        assert trigger.get_binding_name() == "entityTrigger"
        assert trigger.entity_name == name


def test_an_app_without_agents_does_not_start(empty_registry: AgentRegistry) -> None:
    with pytest.raises(InvalidAgents, match="at least one agent"):
        serve_agents(df.DFApp(), [])


def test_a_name_taken_by_an_earlier_declaration_is_refused_and_nothing_added(
    empty_registry: AgentRegistry,
) -> None:
    app = df.DFApp()
    serve_agents(app, [agent("first")])
    with pytest.raises(InvalidAgents, match="two agents are called 'first'"):
        serve_agents(app, [agent("second"), agent("first")])
    assert [info.name for info in empty_registry.infos()] == ["first"]
