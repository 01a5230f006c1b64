"""Parsing and validation of what a client sends."""

from __future__ import annotations

import json
import re

from fastapi import Request

from ..agents.registry import find_agent, registered_agents
from ..streamlog.keys import is_conversation_id
from .errors import ApiError

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_JSON_SHAPE = '{"message": "..."}'


def agent_name(request: Request) -> str:
    name = request.path_params.get("agent", "")
    agent = find_agent(name)
    if agent is None:
        known = ", ".join(info.name for info in registered_agents())
        raise ApiError(
            404, "unknown_agent", f"There is no agent called {name[:64]!r}. Agents: {known}."
        )
    return agent.info.name


def conversation_id(request: Request) -> str:
    value = request.path_params.get("cid", "")
    if not is_conversation_id(value):
        raise ApiError(
            400,
            "invalid_conversation_id",
            "A conversation id is 32 lowercase hexadecimal characters.",
        )
    return value


def run_id(request: Request) -> str:
    value = request.path_params.get("run_id", "")
    if not _RUN_ID.fullmatch(value):
        raise ApiError(400, "invalid_run_id", "A run id is 32 lowercase hexadecimal characters.")
    return value


def idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 200 visible ASCII characters.",
        )
    return value


async def message(request: Request, max_chars: int) -> str:
    """The user's message from a JSON body ``{"message": ...}`` or a ``text/plain`` body."""
    body = await read_body(request, limit=max_chars * 4 + 1024)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ("", "application/json") or media_type.endswith("+json"):
        if not body.strip():
            raise ApiError(400, "missing_message", f"The body is empty; send {_JSON_SHAPE}.")
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise ApiError(
                400, "invalid_json", f"The body is not valid JSON; send {_JSON_SHAPE}."
            ) from None
        if not isinstance(parsed, dict) or "message" not in parsed:
            raise ApiError(400, "missing_message", f"The body must be {_JSON_SHAPE}.")
        text = parsed["message"]
        if not isinstance(text, str):
            raise ApiError(400, "invalid_message", "The message must be a string.")
        if not is_encodable(text):
            raise ApiError(
                400,
                "invalid_message",
                "The message must be valid Unicode text (no lone surrogates).",
            )
    elif media_type == "text/plain":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_encoding", "A text/plain body must be UTF-8.") from None
    else:
        raise ApiError(415, "unsupported_media_type", "Send application/json or text/plain.")
    if not text.strip():
        raise ApiError(400, "empty_message", "The message is empty.")
    if len(text) > max_chars:
        raise ApiError(
            400, "message_too_long", f"The message is longer than {max_chars} characters."
        )
    return text


def is_encodable(text: str) -> bool:
    """JSON's ``\\ud800`` escapes decode to lone surrogates, which no UTF-8 text can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def page_limit(request: Request, default: int = 20, maximum: int = 100) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError(
            400, "invalid_limit", f"The limit must be a whole number from 1 to {maximum}."
        )
    return int(raw)


def turn_cursor(request: Request) -> int | None:
    """``cursor`` of the messages route: the ``next_cursor`` of the previous (newer) page."""
    raw = request.query_params.get("cursor")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise ApiError(400, "invalid_cursor", "Pass the next_cursor of the previous page.")
    return int(raw)
