"""What the Functions host indexes: bindings from the app's metadata, and the real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentstream.functions import UNROUTED_FUNCTION

pytestmark = pytest.mark.slow  # a Python process per indexing, and the real worker library

REPO = Path(__file__).resolve().parent.parent
PYTHON_313 = REPO / ".venv313" / "bin" / "python"

ROUTES = {
    "start_conversation": ("agents/{agent}/conversations", ["POST"], True),
    "post_message": ("agents/{agent}/conversations/{cid}/messages", ["POST"], True),
    "stream": ("agents/{agent}/conversations/{cid}/stream", ["GET"], False),
    "list_conversations": ("agents/{agent}/conversations", ["GET"], False),
    "conversation_status": ("agents/{agent}/conversations/{cid}", ["GET"], False),
    "delete_conversation": ("agents/{agent}/conversations/{cid}", ["DELETE"], True),
    "cancel_run": ("agents/{agent}/conversations/{cid}/runs/{run_id}/cancel", ["POST"], False),
    "health": ("health", ["GET"], False),
    "ui": ("ui", ["GET"], False),
    "openapi_document": ("openapi.json", ["GET"], False),
    "responses_create": ("v1/responses", ["POST"], True),
    "responses_retrieve": ("v1/responses/{response_id}", ["GET"], False),
    "responses_cancel": ("v1/responses/{response_id}/cancel", ["POST"], False),
    "models_list": ("v1/models", ["GET"], False),
    "list_agents": ("agents", ["GET"], False),
    "conversation_messages": ("agents/{agent}/conversations/{cid}/messages", ["GET"], True),
}

_DUMP_BINDINGS = """
import json, function_app
print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())["bindings"]
                  for f in function_app.app.get_functions()}))
"""


def indexed_bindings(**env: str) -> dict[str, list[dict]]:
    """The bindings the host would read, from a fresh interpreter with these settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    output = subprocess.run(
        [sys.executable, "-c", _DUMP_BINDINGS],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output)


def test_every_function_has_the_expected_bindings() -> None:
    functions = indexed_bindings()
    assert set(functions) == {*ROUTES, "travelplanner", UNROUTED_FUNCTION}
    for name, (route, methods, has_client) in ROUTES.items():
        bindings = {b["type"]: b for b in functions[name]}
        trigger = bindings["httpTrigger"]
        assert trigger["route"] == route
        assert trigger["methods"] == methods
        assert trigger["authLevel"] == "FUNCTION"
        assert bindings["http"]["direction"] == "OUT"
        assert ("durableClient" in bindings) == has_client
    assert functions["travelplanner"] == [
        {
            "direction": "IN",
            "type": "entityTrigger",
            "name": "context",
            "entityName": "travelplanner",
        }
    ]


def test_the_catch_all_takes_every_method_and_comes_after_every_route() -> None:
    """The host tries the routes in the order of their functions' names, without regard to case
    (agentstream_dev/devhost/routing.py), so the catch-all's name must sort last."""
    functions = indexed_bindings()
    trigger = next(b for b in functions[UNROUTED_FUNCTION] if b["type"] == "httpTrigger")
    assert trigger["route"] == "{*path}"
    assert "methods" not in trigger  # every method
    assert trigger["authLevel"] == "FUNCTION"
    http = [n for n, bs in functions.items() if "httpTrigger" in {b["type"] for b in bs}]
    assert len(http) == len(ROUTES) + 1
    assert sorted(http, key=str.upper)[-1] == UNROUTED_FUNCTION


def test_auth_level_comes_from_the_setting() -> None:
    functions = indexed_bindings(HTTP_AUTH_LEVEL="anonymous")
    levels = {
        b["authLevel"]
        for name in [*ROUTES, UNROUTED_FUNCTION]
        for b in functions[name]
        if b["type"] == "httpTrigger"
    }
    assert levels == {"ANONYMOUS"}


def test_a_bad_setting_stops_indexing_with_its_name() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=REPO,
        env={**os.environ, "REDIS_STREAM_TTL_MINUTES": "soon"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "REDIS_STREAM_TTL_MINUTES must be a whole number" in result.stderr


@pytest.mark.skipif(
    not PYTHON_313.exists(),
    reason="needs .venv313 (Python 3.13 with azure-functions-runtime); `make test` creates it "
    "when pyenv or the system provides python3.13",
)
def test_the_python_worker_indexes_every_function_on_the_fastapi_types() -> None:
    result = subprocess.run(
        [str(PYTHON_313), str(REPO / "tests" / "worker_indexing.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["http_v2"] is True
    functions = summary["functions"]
    assert set(functions) == {*ROUTES, "travelplanner", UNROUTED_FUNCTION}
    for name, (_, _, has_client) in [*ROUTES.items(), (UNROUTED_FUNCTION, (None, None, False))]:
        assert functions[name]["is_http"] and functions[name]["is_async"]
        assert functions[name]["inputs"]["req"] == "starlette.requests.Request"
        assert functions[name]["returns"] == "starlette.responses.Response"
        assert ("client" in functions[name]["inputs"]) == has_client
    assert functions["travelplanner"]["is_http"] is False
