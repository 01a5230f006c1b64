"""What a Responses client sends: the create body, response ids and stream parameters."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ...streamlog.keys import is_conversation_id
from ..errors import ApiError
from ..validation import is_encodable, read_body
from .translate import CONVERSATION_PREFIX, RESPONSE_PREFIX

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class CreateRequest:
    model: str
    message: str
    background: bool
    stream: bool
    previous_response_id: str | None  # the run id of the response to continue
    conversation_id: str | None  # the conversation to continue


def invalid(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_value", message, param=param)


def missing(param: str) -> ApiError:
    return ApiError(400, "missing_required_parameter", f"'{param}' is required.", param=param)


def response_not_found() -> ApiError:
    return ApiError(404, "response_not_found", "No such response, or it expired.")


def _run_id(response_id: str) -> str | None:
    run_id = response_id.removeprefix(RESPONSE_PREFIX)
    if response_id.startswith(RESPONSE_PREFIX) and _RUN_ID.fullmatch(run_id):
        return run_id
    return None


def run_of(response_id: str) -> str:
    """The run behind a ``resp_<run>`` id; a malformed id is as unknown as a missing one."""
    run_id = _run_id(response_id)
    if run_id is None:
        raise response_not_found()
    return run_id


async def create_request(
    request: Request, agents: Collection[str], max_chars: int
) -> CreateRequest:
    body = await read_body(request, limit=max_chars * 4 + 64 * 1024)
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    model = parsed.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or model not in agents:
        shown = model[:64] if isinstance(model, str) else model
        raise ApiError(
            400,
            "model_not_found",
            f"The model {shown!r} does not exist; GET /api/v1/models lists the agents.",
            param="model",
        )
    if parsed.get("store", True) is not True:
        raise invalid("store", "Responses are always stored; 'store' must be true or left out.")
    if parsed.get("tools"):
        raise ApiError(
            400,
            "unsupported_parameter",
            "The agent brings its own tools; client tools are not supported.",
            param="tools",
        )
    previous = parsed.get("previous_response_id")
    conversation = _conversation(parsed.get("conversation"))
    if previous is not None and conversation is not None:
        raise invalid(
            "previous_response_id", "Give 'previous_response_id' or 'conversation', not both."
        )
    previous_run = None
    if previous is not None:
        if not isinstance(previous, str):
            raise invalid("previous_response_id", "'previous_response_id' must be a string.")
        previous_run = _run_id(previous)
        if previous_run is None:
            raise previous_not_found(previous)
    return CreateRequest(
        model=model,
        message=_message(parsed.get("input"), max_chars),
        background=_flag(parsed, "background"),
        stream=_flag(parsed, "stream"),
        previous_response_id=previous_run,
        conversation_id=conversation,
    )


def previous_not_found(response_id: str) -> ApiError:
    return ApiError(
        400,
        "previous_response_not_found",
        f"Previous response with id {response_id[:80]!r} not found.",
        param="previous_response_id",
    )


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be true or false.")
    return value


def _conversation(value: Any) -> str | None:
    """``conv_<id>`` or ``{"id": "conv_<id>"}`` as a conversation id."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and value.startswith(CONVERSATION_PREFIX):
        conversation_id = value.removeprefix(CONVERSATION_PREFIX)
        if is_conversation_id(conversation_id):
            return conversation_id
    raise invalid("conversation", "'conversation' must be a conversation id 'conv_<32 hex>'.")


def _message(value: Any, max_chars: int) -> str:
    """The user's text: a string, or user message items whose content is text."""
    if value is None:
        raise missing("input")
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value:
        texts = [_item_text(item) for item in value]
    else:
        raise invalid("input", "'input' must be a string or a list of user messages.")
    text = "\n\n".join(texts)
    if not is_encodable(text):
        raise invalid("input", "'input' must be valid Unicode text (no lone surrogates).")
    if not text.strip():
        raise invalid("input", "'input' is empty.")
    if len(text) > max_chars:
        raise invalid("input", f"'input' is longer than {max_chars} characters.")
    return text


def _item_text(item: Any) -> str:
    if (
        not isinstance(item, dict)
        or item.get("type", "message") != "message"
        or item.get("role") != "user"
    ):
        raise invalid("input", "Only user messages are accepted as input items.")
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "input_text"
                or not isinstance(part.get("text"), str)
            ):
                raise invalid("input", "A message's content may only hold input_text parts.")
            parts.append(part["text"])
        return "".join(parts)
    raise invalid("input", "A message's content must be text or a list of input_text parts.")


def stream_flag(request: Request) -> bool:
    value = request.query_params.get("stream", "false").lower()
    if value not in ("true", "false"):
        raise invalid("stream", "'stream' must be true or false.")
    return value == "true"


def starting_after(request: Request) -> int:
    """The sequence number to resume after; -1 (everything) without one."""
    value = request.query_params.get("starting_after")
    if value is None or value == "":
        return -1
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise invalid("starting_after", "'starting_after' must be a sequence number (0 or more).")
    return int(value)
