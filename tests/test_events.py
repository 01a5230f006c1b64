from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import EventSource

from agentstream.api.negotiation import negotiate
from agentstream.events import (
    MESSAGE_DELTA,
    NDJSON,
    SSE,
    TEXT,
    Event,
    ndjson_event,
    sse_event,
    sse_keepalive,
    sse_retry,
    text_event,
)

AWKWARD_TEXTS = [
    "line one\nline two",
    "carriage\rreturn and\r\nwindows",
    "blank\n\n\nlines\n",
    "data: not a field\nid: 99-9\nevent: fake\n\n",
    ": looks like a comment",
    "unicode: Zürich 東京 🚄 \u2028 separator \u2029 \x85 nel",
    "",
    "   leading and trailing spaces   ",
]


def _event(index: int, text: str) -> Event:
    return Event(
        id=f"1700000000000-{index}",
        type=MESSAGE_DELTA,
        run="r1",
        seq=index,
        ts=1700000000000,
        data={"text": text},
    )


def test_sse_round_trip_through_a_real_sse_client() -> None:
    events = [_event(i, text) for i, text in enumerate(AWKWARD_TEXTS)]
    body = sse_retry(3000) + sse_keepalive()
    body += sse_keepalive().join(sse_event(e) for e in events)
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=body.encode()
    )
    frames = list(EventSource(response).iter_sse())
    assert frames[0].retry == 3000 and frames[0].data == ""
    # httpx-sse also yields the keep-alive comments' blank lines as data-less events; a client
    # skips those, as a browser's EventSource does by itself.
    decoded = [frame for frame in frames if frame.data]
    assert [sse.id for sse in decoded] == [e.id for e in events]
    assert [sse.event for sse in decoded] == [MESSAGE_DELTA] * len(events)
    assert [sse.json()["text"] for sse in decoded] == AWKWARD_TEXTS


def test_every_sse_data_line_is_one_line() -> None:
    for i, text in enumerate(AWKWARD_TEXTS):
        frame = sse_event(_event(i, text))
        lines = frame.split("\n")
        assert lines[0].startswith("id: ") and lines[1].startswith("event: ")
        assert lines[2].startswith("data: ") and lines[3:] == ["", ""]
        assert "\r" not in frame


def test_ndjson_round_trip() -> None:
    events = [_event(i, text) for i, text in enumerate(AWKWARD_TEXTS)]
    body = "".join(ndjson_event(e) for e in events)
    lines = body.splitlines()  # splitlines splits on \u2028 too: escaping must prevent that
    assert [json.loads(line)["text"] for line in lines] == AWKWARD_TEXTS
    assert json.loads(lines[1]) == {
        "id": "1700000000000-1",
        "type": MESSAGE_DELTA,
        "run": "r1",
        "seq": 1,
        "ts": 1700000000000,
        "text": AWKWARD_TEXTS[1],
    }


def test_text_is_the_assistant_text_exactly() -> None:
    events = [_event(i, text) for i, text in enumerate(AWKWARD_TEXTS)]
    assert "".join(text_event(e) for e in events) == "".join(AWKWARD_TEXTS)


def test_payload_cannot_override_event_fields() -> None:
    event = Event(
        id="1-0",
        type="tool.result",
        run="r",
        seq=3,
        ts=5,
        data={"id": "forged", "seq": 99, "result": "ok"},
    )
    assert event.to_public() == {
        "id": "1-0",
        "type": "tool.result",
        "run": "r",
        "seq": 3,
        "ts": 5,
        "result": "ok",
    }


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, SSE),
        ("", SSE),
        ("*/*", SSE),
        ("text/event-stream", SSE),
        ("application/x-ndjson", NDJSON),
        ("text/plain", TEXT),
        ("text/html, text/plain;q=0.5", TEXT),
        ("application/x-ndjson;q=0.4, text/event-stream;q=0.9", SSE),
        ("application/json", None),
        ("text/html", None),
        ("text/event-stream;q=0", None),
    ],
)
def test_accept_negotiation(accept: str | None, chosen: str | None) -> None:
    assert negotiate(accept) == chosen


def test_equal_events_hash_alike_and_work_in_sets() -> None:
    built = Event("1-0", "tool.call", "r", 2, 5, {"name": "w", "arguments": "{}"})
    read_back = Event("1-0", "tool.call", "r", 2, 5, data_json='{"arguments":"{}","name":"w"}')
    other = Event("2-0", "tool.call", "r", 3, 6, {"name": "w", "arguments": "{}"})
    assert built == read_back
    assert hash(built) == hash(read_back)
    assert {built, read_back, other} == {built, other}
