"""The HTTP side of the scripted model: streams like the chat-completions API.

Routes: ``POST /v1/chat/completions`` (OpenAI-compatible) and
``POST /openai/deployments/{deployment}/chat/completions`` (Azure OpenAI); ``GET /v1/models``
and ``GET /openai/models`` (what the health check probes). ``GET
/scripted/requests`` lists what was received (auth headers reduced to their scheme) so tests and
demos can see what reached the "model"; ``DELETE`` clears it.

Run it alone: ``python -m agentstream_dev.scripted_model --port 8089``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .script import Reply, reply_to

_PIECE = re.compile(r"\S+\s*|\s+")
CREATED = 1_700_000_000
SLOW_DELAY_SECONDS = 0.02  # pace of a reply whose prompt has the [[slow]] marker


class DroppedConnection(Exception):
    """Raised inside a streaming body so the server cuts the connection mid-response."""


@dataclass
class ScriptedModelState:
    delay_seconds: float = 0.0
    stall_seconds: float = 30.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    failed_once: set[str] = field(default_factory=set)


def create_app(delay_seconds: float = 0.0, stall_seconds: float = 30.0) -> Starlette:
    state = ScriptedModelState(delay_seconds, stall_seconds)

    async def completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "invalid_request_error", "'messages' is required")
        state.requests.append(_record(request, body))
        offered = {
            t["function"].get("name"): t["function"].get("parameters") or {}
            for t in body.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        }
        reply = reply_to(body["messages"], offered)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        for status in (429, 500):
            if f"fail-once:{status}" in reply.markers and key not in state.failed_once:
                state.failed_once.add(key)
                return _error(status, "server_error", f"scripted failure {status}")
        for status in (401, 500):
            if f"fail-always:{status}" in reply.markers:
                return _error(status, "server_error", f"scripted failure {status}")
        model = str(body.get("model") or request.path_params.get("deployment") or "scripted")
        usage = _usage(body, reply)
        if not body.get("stream"):
            return JSONResponse(_completion(model, reply, usage, key))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = _chunks(state, model, reply, usage if include_usage else None, key)
        return StreamingResponse(chunks, media_type="text/event-stream")

    async def models(request: Request) -> Response:
        listed = {"id": "scripted", "object": "model", "created": CREATED, "owned_by": "scripted"}
        return JSONResponse({"object": "list", "data": [listed]})

    async def list_requests(request: Request) -> Response:
        return JSONResponse(state.requests)

    async def clear_requests(request: Request) -> Response:
        state.requests.clear()
        state.failed_once.clear()
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route(
                "/openai/deployments/{deployment}/chat/completions", completions, methods=["POST"]
            ),
            Route("/v1/models", models, methods=["GET"]),
            Route("/openai/models", models, methods=["GET"]),
            Route("/scripted/requests", list_requests, methods=["GET"]),
            Route("/scripted/requests", clear_requests, methods=["DELETE"]),
        ]
    )
    app.state.scripted = state
    return app


def _record(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    authorization = request.headers.get("authorization", "")
    return {
        "path": request.url.path,
        "query": dict(request.query_params),
        "auth_scheme": authorization.split(" ")[0] if authorization else None,
        "bearer_token": authorization.split(" ", 1)[1] if " " in authorization else None,
        "api_key_header": request.headers.get("api-key"),
        "body": body,
    }


def _error(status: int, kind: str, message: str) -> JSONResponse:
    headers = {"retry-after-ms": "10"} if status in (429, 500) else None
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": None}},
        status_code=status,
        headers=headers,
    )


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    prompt = sum(len(json.dumps(m)) for m in body["messages"]) // 4
    completion = len(_PIECE.findall(reply.text)) + 8 * len(reply.tool_calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(model: str, reply: Reply, usage: dict[str, int], key: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    return {
        "id": f"chatcmpl-{key[:12]}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": usage,
    }


async def _chunks(
    state: ScriptedModelState,
    model: str,
    reply: Reply,
    usage: dict[str, int] | None,
    key: str,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        payload = {
            "id": f"chatcmpl-{key[:12]}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    pieces = _PIECE.findall(reply.text)
    fault_at = len(pieces) // 2 if pieces else 0
    for index, piece in enumerate(pieces):
        if index == fault_at:
            fault = await _inject_fault(state, reply)
            if fault is not None:
                yield fault
                return
        delay = SLOW_DELAY_SECONDS if "slow" in reply.markers else state.delay_seconds
        if delay:
            await asyncio.sleep(delay)
        yield chunk({"content": piece})
    for index, call in enumerate(reply.tool_calls):
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        for part in _split(call.arguments, 3):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
    yield chunk({}, reply.finish_reason)
    if usage is not None:
        payload = {
            "id": f"chatcmpl-{key[:12]}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(payload)}\n\n"
    yield "data: [DONE]\n\n"


async def _inject_fault(state: ScriptedModelState, reply: Reply) -> str | None:
    if "error-midstream" in reply.markers:
        error = {"error": {"message": "scripted mid-stream error", "type": "server_error"}}
        return f"data: {json.dumps(error)}\n\n"
    if "drop-midstream" in reply.markers:
        raise DroppedConnection()
    if "stall" in reply.markers:
        await asyncio.sleep(state.stall_seconds)
    return None


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument(
        "--delay", type=float, default=0.03, help="seconds between content chunks (default 0.03)"
    )
    args = parser.parse_args(argv)
    print(
        f"Scripted model server (not a real LLM) on http://{args.host}:{args.port}/v1", flush=True
    )
    uvicorn.run(
        create_app(delay_seconds=args.delay), host=args.host, port=args.port, log_level="warning"
    )
