"""Each kind of agent once end to end under the real Python worker (``tests/worker_host``):
the tests' app of ``tests/agents_app.py``, real Redis, the scripted model."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api
from .standins import scripted_services
from .test_agent_kinds import IDS, KINDS, Kind
from .worker_host.harness import PYTHON_313, REPO, Harness, running_worker, worker_log

pytestmark = [
    pytest.mark.slow,  # the worker harness
    pytest.mark.skipif(
        not PYTHON_313.exists(),
        reason="needs .venv313 (Python 3.13 with azure-functions-runtime and grpcio); `make test` "
        "creates it when pyenv or the system provides python3.13",
    ),
]


@pytest.fixture(scope="module")
def harness(redis_port: int) -> Iterator[Harness]:
    # The worker indexes the script PYTHON_SCRIPT_FILE_NAME names in its app directory: here
    # the tests' app, which imports the repository's function_app.py (PYTHONPATH).
    with scripted_services(create_model_app(), redis_port) as env:
        settings = {
            **env,
            "MODEL_MAX_RETRIES": "0",
            "PYTHON_SCRIPT_FILE_NAME": "agents_app.py",
            "PYTHONPATH": str(REPO),
        }
        with worker_log() as log, running_worker(settings, log, REPO / "tests") as harness:
            yield harness


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_each_kind_runs_end_to_end_under_the_worker(harness: Harness, kind: Kind) -> None:
    api = Api(harness.base_url, kind.agent)
    body = api.start(kind.message).json()
    events = api.read_run(body["conversation_id"])
    assert events[-1]["type"] == "run.completed"
    call = next(e for e in events if e["type"] == "tool.call")
    assert call["name"] == kind.tool and json.loads(call["arguments"])
    assert any(e["type"] == "tool.result" and e["call_id"] == call["call_id"] for e in events)
    turns = api.http.get(f"{api.agent}/conversations/{body['conversation_id']}/messages")
    assert turns.status_code == 200
    assert [t["user"] for t in turns.json()["turns"]] == [kind.message]
    api.http.close()
