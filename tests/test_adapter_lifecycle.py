"""A restarted run, a redelivered finished run and a tool that raises behave the same for every
kind of agent: the entity's run logic, with each kind's runner, on real Redis and the scripted
model."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
from agent_framework import Agent as FrameworkAgent
from agent_framework import Content, function_middleware
from agents import Agent as SdkAgent
from agents import function_tool

from agentstream import model_client
from agentstream.agents import Agent, AgentDefinition
from agentstream.agents.agent_framework import AgentFrameworkAgent, configured_chat_client
from agentstream.agents.openai_agents import OpenAIAgentsAgent
from agentstream.config import Settings
from agentstream.conversation import ConversationState, run
from agentstream.events import MESSAGE_DELTA, RUN_STARTED
from agentstream_dev.scripted_model.server import create_app as create_model_app
from agentstream_examples.packing import packing_assistant

from .standins import scripted_services
from .streamlog_helpers import new_conversation_id
from .test_run_lifecycle import entries, log_for, queue


@pytest.fixture(autouse=True)
def fresh_model_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Our own kind runs on the process-wide client: one for each test's model server."""
    monkeypatch.setattr(model_client, "_client", None)
    yield
    if model_client._client is not None:
        model_client._client.close()


def _own_kind(settings: Settings) -> AgentDefinition:
    def shout(word: str) -> str:
        """Say it louder."""
        return word.upper()

    return Agent(name="shouter", instructions="Shout.", tools=[shout])


def _agent_framework(settings: Settings) -> AgentDefinition:
    def whisper(word: str) -> str:
        """Say it softly."""
        return word.lower()

    return AgentFrameworkAgent(
        FrameworkAgent(
            client=configured_chat_client(settings),
            name="whisperer",
            instructions="Whisper.",
            tools=[whisper],
        )
    )


def _openai_agents(settings: Settings) -> AgentDefinition:
    return packing_assistant


MAKERS: dict[str, Callable[[Settings], AgentDefinition]] = {
    "agentstream": _own_kind,
    "agent-framework": _agent_framework,
    "openai-agents": _openai_agents,
}


@pytest.mark.parametrize("kind", MAKERS)
def test_a_restarted_run_says_so_then_runs_whole_and_a_redelivery_restores_its_turn(
    redis_client: redis.Redis, redis_port: int, kind: str, use_settings: Callable
) -> None:
    with scripted_services(create_model_app(), redis_port) as services:
        settings = use_settings({**services, "MODEL_MAX_RETRIES": "0"})
        agent = MAKERS[kind](settings)
        cid = new_conversation_id()
        run_id = queue(redis_client, cid, "Oslo for 3 days")
        # The first delivery's worker began the run, wrote, and died.
        dead = log_for(redis_client, cid, run_id)
        assert dead.begin("first-delivery").attempt == 1
        dead.append(RUN_STARTED, {"attempt": 1})
        dead.append(MESSAGE_DELTA, {"text": "half an ans"})

        before_batch = ConversationState.from_entity({})
        state = ConversationState.from_entity({})
        assert run(cid, run_id, "Oslo for 3 days", state, settings, agent=agent)
        written = entries(redis_client, cid)
        types = [e["type"] for e in written]
        assert types[:4] == ["run.queued", "run.started", "message.delta", "run.restarted"]
        assert types[4] == "run.started" and types[-1] == "run.completed"
        assert "tool.call" in types and "tool.result" in types
        assert state.runs[run_id] == {"status": "completed", "attempt": 2}
        assert state.history[0] == {"role": "user", "content": "Oslo for 3 days"}

        # The second delivery's state was never committed: it comes again from before the batch.
        assert run(cid, run_id, "Oslo for 3 days", before_batch, settings, agent=agent)
    assert len(entries(redis_client, cid)) == len(written), "a redelivery must write nothing"
    assert before_batch.history == state.history


SECRET = "db://admin:hunter2@10.0.0.7"


def lookup(city: str) -> str:
    """Look a city up."""
    raise ConnectionError(f"{SECRET} is down")


def _raising(kind: str, settings: Settings) -> AgentDefinition:
    if kind == "agentstream":
        return Agent(name="looker", instructions="Look it up.", tools=[lookup])
    if kind == "agent-framework":
        return AgentFrameworkAgent(
            FrameworkAgent(client=configured_chat_client(settings), name="looker", tools=[lookup])
        )
    return OpenAIAgentsAgent(SdkAgent(name="looker", tools=[function_tool(lookup)]))


@pytest.mark.parametrize("kind", MAKERS)
def test_a_tool_that_raises_ends_only_its_call_and_its_text_stays_in_the_worker(
    redis_client: redis.Redis, redis_port: int, kind: str, use_settings: Callable
) -> None:
    with scripted_services(create_model_app(), redis_port) as services:
        settings = use_settings({**services, "MODEL_MAX_RETRIES": "0"})
        cid = new_conversation_id()
        run_id = queue(redis_client, cid, "Look up Oslo")
        state = ConversationState.from_entity({})
        assert run(cid, run_id, "Look up Oslo", state, settings, agent=_raising(kind, settings))
    written = entries(redis_client, cid)
    types = [e["type"] for e in written]
    assert types[-1] == "run.completed"
    assert types.index("tool.call") < types.index("tool.result") < types.index("message.delta")
    assert SECRET not in "".join(e["data"] for e in written)


def test_agent_framework_middleware_runs_around_the_tools_in_the_entity(
    redis_client: redis.Redis, redis_port: int, use_settings: Callable
) -> None:
    seen: list[str] = []

    @function_middleware
    async def audited(context: Any, call_next: Callable[[], Awaitable[None]]) -> None:
        seen.append(context.function.name)
        await call_next()
        said = "".join(content.text or "" for content in context.result)
        context.result = [Content.from_text(f"{said} (audited)")]

    def shout(word: str) -> str:
        """Say it louder."""
        return word.upper()

    with scripted_services(create_model_app(), redis_port) as services:
        settings = use_settings({**services, "MODEL_MAX_RETRIES": "0"})
        agent = AgentFrameworkAgent(
            FrameworkAgent(
                client=configured_chat_client(settings),
                name="shouter",
                tools=[shout],
                middleware=[audited],
            )
        )
        cid = new_conversation_id()
        run_id = queue(redis_client, cid, "oslo")
        state = ConversationState.from_entity({})
        assert run(cid, run_id, "oslo", state, settings, agent=agent)
    result = next(e for e in entries(redis_client, cid) if e["type"] == "tool.result")
    assert json.loads(result["data"])["result"] == "OSLO (audited)"
    assert seen == ["shout"]
