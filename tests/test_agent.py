"""The agent with the real openai client against the scripted model server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from agentstream import model_client
from agentstream.agent import ChatCompletionsLoop
from agentstream.agents import Agent
from agentstream.config import Settings
from agentstream.failures import RunFailure
from agentstream.model_client import create_model_client
from agentstream.tools import Toolbox
from agentstream_dev.scripted_model.server import create_app
from agentstream_examples.travel_planner import travel_planner

from .servers import serve_in_thread
from .standins import external_apis, tool_env


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.ticks = 0

    def text(self, delta: str) -> None:
        self.events.append(("text", delta))

    def tick(self) -> None:
        self.ticks += 1

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        self.events.append(("tool_call", (call_id, name, arguments)))

    def tool_result(self, call_id: str, name: str, result: str) -> None:
        self.events.append(("tool_result", (call_id, name, json.loads(result))))

    def completed(self, finish_reason: str, usage: dict[str, int] | None, turn: list[dict]) -> None:
        self.events.append(("completed", (finish_reason, usage)))
        self.turn = turn

    @property
    def full_text(self) -> str:
        return "".join(value for kind, value in self.events if kind == "text")

    def kinds(self) -> list[str]:
        kinds: list[str] = []
        for kind, _ in self.events:
            if not (kind == "text" and kinds and kinds[-1] == "text"):
                kinds.append(kind)
        return kinds


@pytest.fixture(scope="module")
def model_app() -> Any:
    return create_app(delay_seconds=0.0, stall_seconds=5.0)


@pytest.fixture(scope="module")
def model_url(model_app: Any) -> Iterator[str]:
    with serve_in_thread(model_app) as url:
        yield url


@pytest.fixture(scope="module")
def apis_url() -> Iterator[str]:
    with serve_in_thread(external_apis()) as url:
        yield url


@pytest.fixture
def received(model_app: Any) -> list[dict[str, Any]]:
    state = model_app.state.scripted
    state.requests.clear()
    state.failed_once.clear()
    return state.requests


@pytest.fixture
def make_agent(use_settings: Any) -> Any:
    def make(model_url: str, apis_url: str, **env: str) -> ChatCompletionsLoop:
        settings = use_settings(
            {
                "OPENAI_BASE_URL": f"{model_url}/v1",
                "OPENAI_MODEL": "scripted",
                "MODEL_TIMEOUT_SECONDS": "2",
                "MODEL_MAX_RETRIES": "2",
                **tool_env(apis_url),
                **env,
            }
        )
        assert settings.model is not None
        client = create_model_client(settings.model)
        return travel_planner.bind(client, settings.model.model, settings)

    return make


def toolbox_with(use_settings: Any, env: dict[str, str]) -> Toolbox:
    use_settings(env)
    return Toolbox.enabled(travel_planner.tools)


EXPECTED_PLAN = (
    "Here is your 2-day plan for Lisbon, Portugal.\n"
    "Day 1 (2025-06-01): light showers, 15 to 25 °C. Museums in the morning and a long lunch "
    "indoors. In the evening: Comedy Night at Old Market Hall.\n"
    "Day 2 (2025-06-02): mainly clear, 16 to 26 °C. A walking tour of the old town, then a "
    "picnic in a park.\n"
    "Enjoy your trip!"
)


def test_tool_round_then_plan(
    model_url: str, apis_url: str, received: list, make_agent: Any
) -> None:
    sink = RecordingSink()
    history = make_agent(model_url, apis_url).run([], "Plan 2 days in Lisbon please", sink)

    assert sink.kinds() == [
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
        "text",
        "completed",
    ]
    weather_call = sink.events[0][1]
    assert weather_call[1] == "get_weather_forecast"
    # The server sent these arguments in three fragments; they arrive whole.
    assert json.loads(weather_call[2]) == {"location": "Lisbon", "days": 2}
    events_call = sink.events[2][1]
    assert json.loads(events_call[2]) == {
        "location": "Lisbon",
        "start": "2025-06-01",
        "end": "2025-06-02",
    }
    assert sink.events[1][1][2]["days"][0]["conditions"] == "light showers"
    assert sink.events[3][1][2]["events"][0]["venue"] == "Old Market Hall"
    assert sink.full_text == EXPECTED_PLAN
    finish_reason, usage = sink.events[-1][1]
    assert finish_reason == "stop"
    assert (
        usage is not None
        and usage["total_tokens"] == (usage["prompt_tokens"] + usage["completion_tokens"]) > 0
    )

    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert history[-1]["content"] == EXPECTED_PLAN
    assert len(received) == 2
    assert sink.ticks > sum(1 for kind, _ in sink.events if kind == "text")  # every chunk ticks
    assert received[1]["body"]["messages"][-1]["role"] == "tool"
    assert received[0]["body"]["stream_options"] == {"include_usage": True}


def test_second_turn_sends_the_first_turns_history(
    model_url: str, apis_url: str, received: list, make_agent: Any
) -> None:
    agent = make_agent(model_url, apis_url)
    history = agent.run([], "Plan 2 days in Lisbon please", RecordingSink())
    sink = RecordingSink()
    history = agent.run(history, "What about something cheaper?", sink)
    sent = received[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
    ]
    assert sent[1]["content"] == "Plan 2 days in Lisbon please"
    assert sent[5]["content"] == EXPECTED_PLAN
    assert sink.full_text.startswith('Earlier you asked: "Plan 2 days in Lisbon please".')
    assert "To keep Lisbon cheaper: " in sink.full_text
    assert len(history) == 7


def test_retryable_error_before_output_is_retried(
    model_url: str, apis_url: str, received: list, make_agent: Any
) -> None:
    sink = RecordingSink()
    make_agent(model_url, apis_url).run([], "Hello there [[fail-once:429]]", sink)
    assert sink.kinds() == ["text", "completed"]
    assert len(received) == 2  # the 429, then the retry that succeeded
    assert received[0]["body"] == received[1]["body"]


@pytest.mark.parametrize(
    ("marker", "code"),
    [
        ("[[fail-always:500]]", "model_unavailable"),
        ("[[error-midstream]]", "model_interrupted"),
        ("[[drop-midstream]]", "model_interrupted"),
        ("[[stall]]", "model_timeout"),
        ("[[content-filter]]", "content_filtered"),
        ("[[tool-loop]] in Lisbon", "tool_rounds_exhausted"),
    ],
)
def test_each_failure_has_its_own_code(
    model_url: str, apis_url: str, received: list, marker: str, code: str, make_agent: Any
) -> None:
    sink = RecordingSink()
    agent = make_agent(model_url, apis_url, MAX_TOOL_ROUNDS="2", MODEL_MAX_RETRIES="1")
    with pytest.raises(RunFailure) as raised:
        agent.run([], f"Tell me a long story about trains {marker}", sink)
    assert raised.value.code == code
    assert "scripted" not in raised.value.message and "http" not in raised.value.message.lower()
    assert "completed" not in sink.kinds()
    if code == "model_unavailable":
        assert len(received) == 2  # first try and one retry
    if code in ("model_interrupted", "model_timeout"):
        assert sink.full_text, "the failure came after output had started"
    if code == "tool_rounds_exhausted":
        assert sink.kinds().count("tool_call") == 4  # two rounds of two calls, then the stop


def test_tool_failures_go_back_to_the_model(
    model_url: str, received: list, make_agent: Any
) -> None:
    with serve_in_thread(external_apis(weather_status=503)) as broken_apis:
        sink = RecordingSink()
        make_agent(model_url, broken_apis).run([], "Plan 2 days in Lisbon", sink)
    weather_result = sink.events[1][1][2]
    assert weather_result == {"error": "the weather service answered with HTTP 503"}
    assert "(A tool reported: the weather service answered with HTTP 503.)" in sink.full_text
    assert sink.events[-1][0] == "completed"


def test_unknown_place_and_bad_arguments_are_tool_errors(apis_url: str, use_settings: Any) -> None:
    toolbox = toolbox_with(use_settings, tool_env(apis_url))
    assert json.loads(toolbox.call("get_weather_forecast", '{"location": "Atlantis"}')) == {
        "error": "no place called 'Atlantis' was found"
    }
    assert "error" in json.loads(toolbox.call("get_weather_forecast", "{not json"))
    assert "error" in json.loads(toolbox.call("get_weather_forecast", '{"days": 2}'))
    assert "error" in json.loads(toolbox.call("no_such_tool", "{}"))
    assert "error" in json.loads(
        toolbox.call(
            "get_local_events", '{"location": "X", "start": "2025-06-05", "end": "2025-06-01"}'
        )
    )


def test_unreachable_weather_service_is_a_tool_error(use_settings: Any) -> None:
    toolbox = toolbox_with(
        use_settings,
        {"OPEN_METEO_GEOCODING_URL": "http://127.0.0.1:9/v1/search", "TOOL_TIMEOUT_SECONDS": "1"},
    )
    result = json.loads(toolbox.call("get_weather_forecast", '{"location": "Lisbon"}'))
    assert result == {"error": "the geocoding service could not be reached"}


def test_events_tool_is_offered_only_with_a_key(apis_url: str, use_settings: Any) -> None:
    with_key = toolbox_with(use_settings, tool_env(apis_url))
    without = toolbox_with(use_settings, tool_env(apis_url, events_key=None))
    assert with_key.names == ["get_weather_forecast", "get_local_events"]
    assert without.names == ["get_weather_forecast"]


def test_without_the_events_tool_the_model_is_not_offered_it(
    model_url: str, apis_url: str, received: list, make_agent: Any
) -> None:
    sink = RecordingSink()
    make_agent(model_url, apis_url, TICKETMASTER_API_KEY="").run([], "2 days in Lisbon", sink)
    offered = [t["function"]["name"] for t in received[0]["body"]["tools"]]
    assert offered == ["get_weather_forecast"]
    assert [v[1] for k, v in sink.events if k == "tool_call"] == ["get_weather_forecast"]


AZURE = {"AZURE_OPENAI_DEPLOYMENT": "planner-dep", "AZURE_OPENAI_API_VERSION": "2024-10-21"}


def test_azure_key_path_sends_the_api_key_header(model_url: str, received: list) -> None:
    settings = Settings.from_env(
        {"AZURE_OPENAI_ENDPOINT": model_url, "AZURE_OPENAI_KEY": "azure-key-1", **AZURE}
    )
    assert settings.model is not None
    client = create_model_client(settings.model)
    client.chat.completions.create(
        model="planner-dep", messages=[{"role": "user", "content": "hi"}]
    )
    assert received[-1]["path"] == "/openai/deployments/planner-dep/chat/completions"
    assert received[-1]["query"] == {"api-version": "2024-10-21"}
    assert received[-1]["api_key_header"] == "azure-key-1"
    assert received[-1]["auth_scheme"] is None


class StandInCredential:
    """Stands in for DefaultAzureCredential: hands out a fixed token, records the scopes."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("entra-token-1", 4_102_444_800)


def test_azure_entra_id_path_sends_a_bearer_token(model_url: str, received: list) -> None:
    settings = Settings.from_env({"AZURE_OPENAI_ENDPOINT": model_url, **AZURE})
    assert settings.model is not None and settings.model.uses_entra_id
    credential = StandInCredential()
    client = create_model_client(settings.model, credential=credential)
    client.chat.completions.create(
        model="planner-dep", messages=[{"role": "user", "content": "hi"}]
    )
    assert received[-1]["auth_scheme"] == "Bearer"
    assert received[-1]["bearer_token"] == "entra-token-1"
    assert received[-1]["api_key_header"] is None
    assert credential.scopes == [("https://cognitiveservices.azure.com/.default",)]


def test_scripted_model_is_deterministic(model_url: str) -> None:
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": "3 days in Rome"}],
        "tools": [{"type": "function", "function": {"name": "get_weather_forecast"}}],
        "stream": True,
    }
    bodies = [httpx.post(f"{model_url}/v1/chat/completions", json=request).text for _ in range(2)]
    assert bodies[0] == bodies[1]
    assert bodies[0].rstrip().endswith("data: [DONE]")


def test_an_agents_own_model_settings_and_instructions_reach_the_model(
    model_url: str, received: list, use_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_settings({"OPENAI_BASE_URL": f"{model_url}/v1", "OPENAI_MODEL": "scripted"})
    seen: list[list[dict]] = []

    def instructions(conversation: list[dict]) -> str:
        seen.append(conversation)
        return f"You have seen {len(conversation)} messages."

    agent = Agent(
        name="tuned",
        instructions=instructions,
        model="other-deployment",
        model_settings={"temperature": 0.25, "max_tokens": 300},
    )
    monkeypatch.setattr(model_client, "_client", None)  # the process-wide one, for these settings
    runner = agent.runner(settings)
    try:
        runner.run(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "Hello",
            RecordingSink(),
        )
    finally:
        if model_client._client is not None:
            model_client._client.close()
    body = received[-1]["body"]
    assert (body["model"], body["temperature"], body["max_tokens"]) == (
        "other-deployment",
        0.25,
        300,
    )
    assert body["messages"][0] == {"role": "system", "content": "You have seen 3 messages."}
    assert seen[0][-1] == {"role": "user", "content": "Hello"}
