"""The pure translation of a run's stored events into Responses events, held against the SDK's
own types (what ``_strict_response_validation=True`` checks)."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from agentstream.api.responses.translate import BrokenRun, ResponseMeta, translate
from agentstream.events import Event

RUN = "a" * 32
META = ResponseMeta(RUN, "b" * 32, "travelplanner", background=True)
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def run_events(*payloads: tuple[str, dict[str, Any]], run: str = RUN) -> list[Event]:
    return [
        Event(f"{1000 + seq}-0", kind, run, seq, 1_700_000_000_000 + seq, data)
        for seq, (kind, data) in enumerate(payloads)
    ]


CALL = {"call_id": "c1", "name": "get_weather_forecast", "arguments": '{"location": "Lisbon"}'}
RESTARTED_RUN = run_events(
    ("run.queued", {"message": "Plan 3 days in Lisbon"}),
    ("run.started", {"attempt": 1}),
    ("message.delta", {"text": "Let me "}),
    ("message.delta", {"text": "look."}),
    ("tool.call", CALL),
    ("tool.result", {"call_id": "c1", "name": "get_weather_forecast", "result": '{"t": 20}'}),
    ("tool.call", {**CALL, "call_id": "c2"}),
    ("message.delta", {"text": "Half a pla"}),
    ("run.restarted", {"attempt": 2}),
    ("run.started", {"attempt": 2}),
    ("tool.call", CALL),
    ("tool.result", {"call_id": "c1", "name": "get_weather_forecast", "result": '{"t": 21}'}),
    ("message.delta", {"text": "Here is "}),
    ("message.delta", {"text": "your plan."}),
    (
        "run.completed",
        {
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
    ),
)


def test_numbers_are_gapless_and_any_prefix_of_the_run_gives_a_prefix_of_the_events() -> None:
    whole, _ = translate(META, RESTARTED_RUN)
    assert [e["sequence_number"] for e in whole] == list(range(len(whole)))
    for cut in range(len(RESTARTED_RUN)):
        partial, _ = translate(META, RESTARTED_RUN[:cut])
        assert partial == whole[: len(partial)]


def test_every_event_and_the_response_fit_the_sdks_types() -> None:
    events, translator = translate(META, RESTARTED_RUN)
    for event in events:
        STREAM_EVENT.validate_python(event)
    response = Response.model_validate(translator.response())
    assert response.status == "completed"
    assert response.usage is not None and response.usage.total_tokens == 15
    assert response.output_text == "Let me look.Half a plaHere is your plan."
    assert events[-1]["response"] == translator.response()


def test_text_and_tool_calls_become_message_and_mcp_call_items() -> None:
    events, translator = translate(META, RESTARTED_RUN)
    assert [e["type"] for e in events[:12]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # message
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",  # closed before the tool call
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",  # mcp_call
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
    ]
    assert events[0]["response"]["status"] == "queued"
    output = translator.response()["output"]
    assert [(item["type"], item["status"]) for item in output] == [
        ("message", "completed"),
        ("mcp_call", "completed"),
        ("mcp_call", "incomplete"),  # the restart closed what the first attempt left open
        ("message", "incomplete"),
        ("mcp_call", "completed"),
        ("message", "completed"),
    ]
    assert output[1]["name"] == "get_weather_forecast" and output[1]["output"] == '{"t": 20}'
    assert output[1]["arguments"] == CALL["arguments"]
    assert len({item["id"] for item in output}) == len(output)
    assert [e["type"] for e in events].count("response.in_progress") == 1


@pytest.mark.parametrize(
    ("terminal", "event_type", "status"),
    [
        (
            ("run.failed", {"code": "model_timeout", "message": "The model timed out."}),
            "failed",
            "failed",
        ),
        (("run.cancelled", {}), "incomplete", "cancelled"),
    ],
)
def test_a_run_that_ends_badly_closes_its_open_items_as_incomplete(
    terminal: tuple[str, dict[str, Any]], event_type: str, status: str
) -> None:
    run = run_events(
        ("run.queued", {"message": "hi"}),
        ("run.started", {"attempt": 1}),
        ("message.delta", {"text": "Half"}),
        terminal,
    )
    events, translator = translate(META, run)
    for event in events:
        STREAM_EVENT.validate_python(event)
    assert events[-2]["type"] == "response.output_item.done"
    assert events[-2]["item"]["status"] == "incomplete"
    assert events[-1]["type"] == f"response.{event_type}"
    response = Response.model_validate(events[-1]["response"])
    assert response.status == status and translator.finished
    if status == "failed":
        assert response.error is not None and response.error.code == "server_error"
        assert response.error.message == "model_timeout: The model timed out."
    else:
        assert response.error is None


def test_events_of_other_runs_and_after_the_end_add_nothing() -> None:
    own = RESTARTED_RUN[:3]
    other = run_events(
        ("run.queued", {"message": "x"}), ("message.delta", {"text": "y"}), run="f" * 32
    )
    mixed, _ = translate(META, [own[0], *other, *own[1:]])
    assert mixed == translate(META, own)[0]
    after, _ = translate(META, [*RESTARTED_RUN, *RESTARTED_RUN[2:4]])
    assert after == translate(META, RESTARTED_RUN)[0]


def test_a_hole_in_the_run_is_refused_rather_than_numbered_wrongly() -> None:
    holed = [*RESTARTED_RUN[:3], *RESTARTED_RUN[5:]]  # the cap trimmed two entries away
    with pytest.raises(BrokenRun):
        translate(META, holed)
    with pytest.raises(BrokenRun):
        translate(META, RESTARTED_RUN[1:])  # the run's first event is gone
