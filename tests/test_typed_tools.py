"""Typed tools: schemas from signatures, validated arguments, and failures that end one call."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Annotated, Literal

import openai
import pytest
from pydantic import Field

from agentstream.agent import ChatCompletionsLoop
from agentstream.tools import Toolbox, ToolError, tool
from agentstream_dev.scripted_model.server import create_app

from .servers import serve_in_thread


def forecast(
    city: Annotated[str, "City name"],
    days: Annotated[int, Field(ge=1, le=7)] = 3,
    unit: Literal["c", "f"] = "c",
) -> dict:
    """The forecast for a city.

    Longer explanation the model sees too.
    """
    return {"city": city, "days": days, "unit": unit}


async def slow_echo(text: str, on: date) -> str:
    """Echo, asynchronously."""
    await asyncio.sleep(0)
    return f"{text} on {on.isoformat()}"


def refuses(reason: str) -> str:
    raise ToolError(f"cannot do that: {reason}")


def crashes() -> str:
    raise RuntimeError("secret connection string xyz")


def test_the_schema_comes_from_the_signature_and_docstring() -> None:
    schema = tool(forecast).schema()["function"]
    assert schema["name"] == "forecast"
    assert schema["description"].startswith("The forecast for a city.")
    parameters = schema["parameters"]
    assert parameters["required"] == ["city"]
    assert parameters["additionalProperties"] is False
    props = parameters["properties"]
    assert props["city"]["type"] == "string" and props["city"]["description"] == "City name"
    assert props["days"] == {
        "default": 3,
        "maximum": 7,
        "minimum": 1,
        "title": "Days",
        "type": "integer",
    }
    assert props["unit"]["enum"] == ["c", "f"]


def test_valid_arguments_reach_sync_and_async_functions() -> None:
    box = Toolbox([tool(forecast), tool(slow_echo)])
    assert json.loads(box.call("forecast", '{"city": "Oslo", "days": 2}')) == {
        "city": "Oslo",
        "days": 2,
        "unit": "c",
    }
    assert box.call("slow_echo", '{"text": "hi", "on": "2025-06-01"}') == "hi on 2025-06-01"


@pytest.mark.parametrize(
    ("arguments", "mentions"),
    [
        ('{"days": 2}', "city: Field required"),
        ('{"city": "Oslo", "days": 99}', "days: Input should be less than or equal to 7"),
        ('{"city": "Oslo", "unit": "k"}', "unit: Input should be 'c' or 'f'"),
        ('{"city": "Oslo", "extra": 1}', "extra: Extra inputs are not permitted"),
        ("{not json", "Invalid JSON"),
        ("[1, 2]", "arguments: Input should be an object"),
    ],
)
def test_bad_arguments_are_a_tool_error_the_model_can_read(arguments: str, mentions: str) -> None:
    result = json.loads(Toolbox([tool(forecast)]).call("forecast", arguments))
    assert result["error"].startswith("invalid arguments (")
    assert mentions in result["error"]


def test_a_tool_error_and_a_crash_end_only_that_call() -> None:
    box = Toolbox([tool(refuses), tool(crashes), tool(forecast)])
    assert json.loads(box.call("refuses", '{"reason": "closed"}')) == {
        "error": "cannot do that: closed"
    }
    crashed = box.call("crashes", "{}")
    assert json.loads(crashed) == {"error": "crashes failed unexpectedly"}
    assert "secret" not in crashed
    assert json.loads(box.call("forecast", '{"city": "Oslo"}'))["city"] == "Oslo"
    assert json.loads(box.call("nope", "{}")) == {"error": "unknown tool 'nope'"}


def test_is_enabled_decides_which_tools_are_offered() -> None:
    switch = {"on": False}
    tools = [tool(forecast), tool(slow_echo, is_enabled=lambda: switch["on"])]
    assert Toolbox.enabled(tools).names == ["forecast"]
    switch["on"] = True
    assert Toolbox.enabled(tools).names == ["forecast", "slow_echo"]


def test_a_signature_that_cannot_be_described_is_refused_at_once() -> None:
    def variadic(*names: str) -> str:
        return ""

    with pytest.raises(TypeError, match="cannot be described"):
        tool(variadic)


def test_in_a_run_a_raising_tool_ends_only_its_call() -> None:
    """The loop against the scripted model (which calls the agent's tool): the run completes."""

    def lookup(city: str) -> str:
        raise ConnectionError("db://user:secret@host is down")

    events: list[tuple[str, str]] = []

    class Sink:
        def text(self, delta: str) -> None:
            events.append(("text", delta))

        def tick(self) -> None:
            pass

        def tool_call(self, call_id: str, name: str, arguments: str) -> None:
            events.append(("call", name))

        def tool_result(self, call_id: str, name: str, result: str) -> None:
            events.append(("result", result))

        def completed(self, finish_reason: str, usage: object, turn: list) -> None:
            events.append(("completed", finish_reason))

    with serve_in_thread(create_app()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        loop = ChatCompletionsLoop(
            client,
            "scripted",
            Toolbox([tool(lookup)]),
            instructions=lambda _: "Be brief.",
            max_tool_rounds=2,
        )
        loop.run([], "Anything on in Oslo?", Sink())
        client.close()
    assert events[0] == ("call", "lookup")
    assert events[1] == ("result", '{"error": "lookup failed unexpectedly"}')
    assert events[-1] == ("completed", "stop")
    assert "secret" not in "".join(value for _, value in events)
