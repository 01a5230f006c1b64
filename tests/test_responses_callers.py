"""The Responses surface with callers: identities (App Service Authentication's header), their
conversations, and their limits, through the real ``openai`` package."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import redis

from agentstream.streamlog.keys import meta_key, stream_key
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .devhost_process import running_devhost
from .standins import scripted_services

PRINCIPAL = "x-ms-client-principal-id"


@pytest.fixture(scope="module")
def base_url(redis_port: int) -> Iterator[str]:
    with scripted_services(create_model_app(delay_seconds=0.002), redis_port) as env:
        callers = {
            "AUTH_MODE": "easyauth",
            "WEBSITE_AUTH_ENABLED": "true",
            "LIMIT_OPEN_STREAMS": "1",
        }
        with running_devhost({**env, **callers}) as url:
            yield url


def sdk(base_url: str, caller: str | None) -> openai.OpenAI:
    headers = {PRINCIPAL: caller} if caller else {}
    return openai.OpenAI(
        base_url=f"{base_url}/api/v1",
        api_key="unused",
        default_headers=headers,
        max_retries=0,
        _strict_response_validation=True,
    )


def test_no_caller_is_a_401_and_another_callers_response_is_unknown(base_url: str) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(base_url, None).models.list()
    assert refused.value.code == "unauthenticated"
    assert refused.value.response.headers["www-authenticate"].startswith("Bearer")
    alice, bob = sdk(base_url, "alice"), sdk(base_url, "bob")
    first = alice.responses.create(model="travelplanner", input="Plan 1 day in Lisbon")
    assert alice.responses.retrieve(first.id).status == "completed"
    for call in (
        lambda: bob.responses.retrieve(first.id),
        lambda: bob.responses.cancel(first.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as continued:
        bob.responses.create(model="travelplanner", input="More", previous_response_id=first.id)
    assert continued.value.code == "previous_response_not_found"
    conversation = first.model_dump()["conversation"]["id"]
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="travelplanner", input="More", conversation=conversation)


def test_a_callers_open_streams_are_limited(base_url: str) -> None:
    carol = sdk(base_url, "carol")
    stream = carol.responses.create(
        model="travelplanner", input="Plan 7 days in Rome [[slow]]", background=True, stream=True
    )
    first = next(iter(stream))
    with pytest.raises(openai.RateLimitError) as limited:
        carol.responses.retrieve(first.response.id, stream=True)
    assert limited.value.code == "limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 0
    rest = list(stream)
    assert rest[-1].type == "response.completed"
    # The slot is given back when the stream ends: the next read is served.
    again = list(carol.responses.retrieve(first.response.id, stream=True, starting_after=0))
    assert again[0].sequence_number == 1


def test_after_the_stream_expired_another_callers_response_is_still_unknown(
    base_url: str, redis_store: redis.Redis
) -> None:
    alice, bob = sdk(base_url, "alice"), sdk(base_url, "bob")
    kept = alice.responses.create(model="travelplanner", input="Plan 1 day in Porto")
    cid = kept.model_dump()["conversation"]["id"].removeprefix("conv_")
    redis_store.pexpire(stream_key(cid), 1)  # the stream expires by TTL; its run record stays
    redis_store.pexpire(meta_key(cid), 1)
    while redis_store.exists(stream_key(cid)):
        pass
    assert alice.responses.retrieve(kept.id).model_dump() == kept.model_dump()
    with pytest.raises(openai.NotFoundError) as unknown:
        bob.responses.retrieve("resp_" + "0" * 32)
    for call in (
        lambda: bob.responses.retrieve(kept.id),
        lambda: bob.responses.retrieve(kept.id, stream=True),
        lambda: bob.responses.cancel(kept.id),
    ):
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert refused.value.response.content == unknown.value.response.content
