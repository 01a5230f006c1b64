"""The official OpenAI SDK against the Responses-compatible surface: one scenario, any SDK version.

It imports nothing but ``openai`` and the standard library, so the same checks run in the test
venv (the newest SDK) and, as ``python responses_sdk_scenario.py <json arguments>``, in a venv
with the oldest SDK the project supports. Every client validates strictly
(``_strict_response_validation=True``): the Response and every event must fit the SDK's types.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import httpx
import openai

AGENT = "travelplanner"
TERMINAL = {"response.completed", "response.failed", "response.incomplete"}


def _options(base_url: str) -> dict[str, Any]:
    return {
        "base_url": f"{base_url}/api/v1",
        "api_key": "sk-ignored-by-the-app",
        "_strict_response_validation": True,
    }


def sync_client(base_url: str) -> tuple[openai.OpenAI, list[str]]:
    """A client that records every request it sends (to count the SDK's own retries)."""
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    hooks = httpx.Client(event_hooks={"request": [record]})
    return openai.OpenAI(http_client=hooks, **_options(base_url)), sent


def dumped(events: list[Any]) -> list[dict[str, Any]]:
    return [event.model_dump(mode="json") for event in events]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def read_with_cuts(
    client: openai.OpenAI, first: Any, rng: random.Random, cuts: int
) -> list[dict[str, Any]]:
    """Read ``first`` (an open event stream), cutting it ``cuts`` times at random points and
    resuming each time with ``starting_after``; every event once, in order."""
    events: list[dict[str, Any]] = []
    stream = first
    while True:
        budget = rng.randint(1, 12) if cuts > 0 else None
        for event in stream:
            events.append(event.model_dump(mode="json"))
            if event.type in TERMINAL:
                break
            if budget is not None:
                budget -= 1
                if budget == 0:
                    break
        stream.close()
        if events and events[-1]["type"] in TERMINAL:
            return events
        cuts -= 1
        response_id = events[0]["response"]["id"]
        stream = client.responses.retrieve(
            response_id, stream=True, starting_after=events[-1]["sequence_number"]
        )


async def aread_with_cuts(
    client: openai.AsyncOpenAI, first: Any, rng: random.Random, cuts: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    stream = first
    while True:
        budget = rng.randint(1, 12) if cuts > 0 else None
        async for event in stream:
            events.append(event.model_dump(mode="json"))
            if event.type in TERMINAL:
                break
            if budget is not None:
                budget -= 1
                if budget == 0:
                    break
        await stream.close()
        if events and events[-1]["type"] in TERMINAL:
            return events
        cuts -= 1
        response_id = events[0]["response"]["id"]
        stream = await client.responses.retrieve(
            response_id, stream=True, starting_after=events[-1]["sequence_number"]
        )


def check_whole(events: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    assert events == reference, "a resumed read differs from the uninterrupted one"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"


def live_cuts_sync(client: openai.OpenAI, rng: random.Random) -> str:
    """Create with background and stream, cut live, resume; returns the response id."""
    created = client.responses.create(
        model=AGENT, input="Plan 3 days in Lisbon", background=True, stream=True
    )
    events = read_with_cuts(client, created, rng, cuts=5)
    response_id = events[0]["response"]["id"]
    reference = dumped(list(client.responses.retrieve(response_id, stream=True)))
    check_whole(events, reference)
    final = client.responses.retrieve(response_id)
    assert final.status == "completed" and final.background is True
    assert text_of(events) == final.output_text != ""
    assert events[-1]["response"]["output"] == final.model_dump(mode="json")["output"]
    assert final.usage is not None and final.usage.total_tokens > 0
    assert {e["type"] for e in events} >= {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.mcp_call.completed",
        "response.content_part.added",
        "response.output_text.done",
        "response.output_item.done",
    }
    assert all(item.type != "function_call" for item in final.output)
    return response_id


async def live_cuts_async(client: openai.AsyncOpenAI, rng: random.Random) -> str:
    created = await client.responses.create(
        model=AGENT, input="Plan 2 days in Rome", background=True, stream=True
    )
    events = await aread_with_cuts(client, created, rng, cuts=5)
    response_id = events[0]["response"]["id"]
    whole = await client.responses.retrieve(response_id, stream=True)
    check_whole(events, dumped([event async for event in whole]))
    final = await client.responses.retrieve(response_id)
    assert text_of(events) == final.output_text != ""
    async with client.responses.stream(response_id=response_id, starting_after=7) as stream:
        helper = await stream.get_final_response()
    assert helper.output_text == final.output_text
    return response_id


def random_cuts(client: openai.OpenAI, response_id: str, rng: random.Random, count: int) -> None:
    """Resume a stored response at ``count`` random points: always exactly the rest."""
    reference = dumped(list(client.responses.retrieve(response_id, stream=True)))
    assert [e["sequence_number"] for e in reference] == list(range(len(reference)))
    for _ in range(count):
        cut = rng.randrange(-1, len(reference))
        if cut < 0:
            resumed = client.responses.retrieve(response_id, stream=True)
        else:
            resumed = client.responses.retrieve(response_id, stream=True, starting_after=cut)
        assert dumped(list(resumed)) == reference[cut + 1 :], f"resumed after {cut}"


async def arandom_cuts(
    client: openai.AsyncOpenAI, response_id: str, rng: random.Random, count: int
) -> None:
    whole = await client.responses.retrieve(response_id, stream=True)
    reference = dumped([event async for event in whole])
    for _ in range(count):
        cut = rng.randrange(0, len(reference))
        resumed = await client.responses.retrieve(response_id, stream=True, starting_after=cut)
        assert dumped([event async for event in resumed]) == reference[cut + 1 :], cut


def poll_and_follow_up(client: openai.OpenAI) -> None:
    first = client.responses.create(model=AGENT, input="Plan 1 day in Porto", background=True)
    assert first.status in ("queued", "in_progress")
    while first.status in ("queued", "in_progress"):
        time.sleep(0.05)  # a polling client's pace; the loop ends on the status, not the time
        first = client.responses.retrieve(first.id)
    assert first.status == "completed", first.status
    follow_up = client.responses.create(
        model=AGENT, input="What about something cheaper?", previous_response_id=first.id
    )
    assert follow_up.status == "completed"
    assert follow_up.previous_response_id == first.id
    assert 'Earlier you asked: "Plan 1 day in Porto"' in follow_up.output_text
    try:
        client.responses.create(model=AGENT, input="Again", previous_response_id=first.id)
        raise AssertionError("an older response was continued")
    except openai.BadRequestError as exc:
        assert exc.code == "previous_response_not_latest"


def cancel_running(client: openai.OpenAI, sent: list[str]) -> None:
    """A running response: continuing it is a 409 the SDK does not retry; cancel ends it."""
    stream = client.responses.create(  # the scripted model writes this one slowly
        model=AGENT, input="Plan 7 days in Lisbon [[slow]]", background=True, stream=True
    )
    events = []
    for event in stream:
        events.append(event)
        if event.type == "response.in_progress":
            break
    response_id = events[0].response.id
    before = len(sent)
    try:
        client.responses.create(model=AGENT, input="Next", previous_response_id=response_id)
        raise AssertionError("a running response was continued")
    except openai.ConflictError as exc:
        assert exc.code == "run_active"
    assert sent[before:] == ["POST /api/v1/responses"], "the 409 was retried"
    cancelled = client.responses.cancel(response_id)
    assert cancelled.status == "cancelled", cancelled.status
    rest = list(stream)  # the stream goes on from where it was left
    assert rest[-1].type == "response.incomplete"
    assert rest[-1].response.status == "cancelled"
    assert client.responses.cancel(response_id).status == "cancelled"  # idempotent
    assert client.responses.retrieve(response_id).status == "cancelled"


def unknown_ids(client: openai.OpenAI) -> None:
    for call in (
        lambda: client.responses.retrieve("resp_" + "0" * 32),
        lambda: client.responses.retrieve("resp_not-one-of-ours"),
        lambda: client.responses.cancel("resp_" + "0" * 32),
        lambda: list(client.responses.retrieve("resp_" + "0" * 32, stream=True)),
    ):
        try:
            call()
            raise AssertionError("an unknown id was found")
        except openai.NotFoundError as exc:
            assert exc.code == "response_not_found"
    try:
        client.responses.create(model="nobody", input="Hello")
        raise AssertionError("an unknown model was accepted")
    except openai.BadRequestError as exc:
        assert exc.code == "model_not_found" and exc.param == "model"
    assert [m.id for m in client.models.list()] == [AGENT]


async def async_part(base_url: str, rng: random.Random, cuts: int) -> None:
    async with openai.AsyncOpenAI(**_options(base_url)) as client:
        rome = await live_cuts_async(client, rng)
        await arandom_cuts(client, rome, rng, cuts)


def main(base_url: str, *, stored_ids: list[str], cuts: int, seed: int = 18) -> None:
    """Everything above; ``cuts`` random resumptions, spread over the stored responses (the
    sync client) and one live-made response (the async client)."""
    rng = random.Random(seed)
    sync, sent = sync_client(base_url)
    lisbon = live_cuts_sync(sync, rng)
    with sync.responses.stream(response_id=lisbon, starting_after=3) as stream:
        assert stream.get_final_response().status == "completed"
    asyncio.run(async_part(base_url, rng, cuts // 2))
    stored = [lisbon, *stored_ids]
    for response_id in stored:
        random_cuts(sync, response_id, rng, (cuts - cuts // 2) // len(stored))
    poll_and_follow_up(sync)
    cancel_running(sync, sent)
    unknown_ids(sync)


def essentials(base_url: str, *, cuts: int, seed: int) -> None:
    """A shorter run of the same checks, for other hosts and other Redis topologies."""
    rng = random.Random(seed)
    client, sent = sync_client(base_url)
    lisbon = live_cuts_sync(client, rng)
    random_cuts(client, lisbon, rng, cuts // 2)
    asyncio.run(async_part(base_url, rng, cuts // 2))
    poll_and_follow_up(client)
    cancel_running(client, sent)
    unknown_ids(client)


if __name__ == "__main__":
    arguments = json.loads(sys.argv[1])
    main(**arguments)
    print(f"openai {openai.__version__}: every check passed")
