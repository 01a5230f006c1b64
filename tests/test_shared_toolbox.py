"""The entity's process-wide tool box is built once, however many entity threads race for it."""

from __future__ import annotations

import threading

import httpx
import pytest

from agentstream import conversation, model_client
from agentstream.agent import TravelPlannerAgent
from agentstream.config import Settings, ToolSettings

from .standins import tool_env


def test_racing_entity_threads_build_one_toolbox(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing is called: the model client and the tools are only built.
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_MODEL": "m"}
    settings = Settings.from_env({**env, **tool_env("http://127.0.0.1:9")})
    monkeypatch.setattr(conversation, "_toolbox", None)
    monkeypatch.setattr(model_client, "_client", None)
    http_clients: list[httpx.Client] = []
    both_building = threading.Event()
    real_build = conversation.build_toolbox

    def build(tools: ToolSettings) -> conversation.Toolbox:
        http = httpx.Client()
        http_clients.append(http)
        if len(http_clients) == 2:
            both_building.set()
        else:
            # Without the lock, the other thread gets here while this one builds.
            both_building.wait(timeout=1)
        return real_build(tools, http)

    monkeypatch.setattr(conversation, "build_toolbox", build)
    agents: list[TravelPlannerAgent] = []
    threads = [
        threading.Thread(target=lambda: agents.append(conversation.default_agent(settings)))
        for _ in range(2)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(http_clients) == 1, "each thread built a tool box and an HTTP client"
        assert len(agents) == 2
        assert agents[0]._toolbox is agents[1]._toolbox
    finally:
        for http in http_clients:
            http.close()
        if model_client._client is not None:
            model_client._client.close()
