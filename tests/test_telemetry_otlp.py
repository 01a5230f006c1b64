"""The production path: OTEL_EXPORTER_OTLP_ENDPOINT set, the app's OTLP exporters sending to a
collector the test runs, through the development host and through the real Python worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api
from .devhost_process import running_devhost
from .otlp_collector import Collected, running_collector
from .standins import scripted_services
from .worker_host.harness import PYTHON_313, running_worker, worker_log

MESSAGE = "Plan 2 days in Lisbon"
METRICS = {
    "agentstream.runs.started",
    "agentstream.runs.ended",
    "agentstream.run.duration",
    "agentstream.run.time_to_first_token",
    "agentstream.streams.active",
    "agentstream.stream.token_latency",
    "agentstream.writer.flush_size",
}


@contextmanager
def _worker(env: dict[str, str]) -> Iterator[str]:
    with worker_log() as log, running_worker(env, log) as harness:
        yield harness.base_url


HOSTS: dict[str, Callable[[dict[str, str]], AbstractContextManager[str]]] = {
    "devhost": running_devhost,
    "worker": _worker,
}


@pytest.fixture(params=sorted(HOSTS), scope="module")
def exported(request: pytest.FixtureRequest, redis_port: int) -> Iterator[tuple[Api, Collected]]:
    if request.param == "worker" and not PYTHON_313.exists():
        pytest.skip(
            "needs .venv313 (Python 3.13 with azure-functions-runtime); `make test` creates it "
            "when pyenv or the system provides python3.13"
        )
    with (
        running_collector() as (collector_url, collected),
        scripted_services(create_model_app(delay_seconds=0.001), redis_port) as services,
    ):
        env = {
            **services,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
            "OTEL_SERVICE_NAME": "agentstream-test",
            # Export often, so the test waits milliseconds, not the default seconds.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
        with HOSTS[request.param](env) as base_url:
            api = Api(base_url)
            yield api, collected
            api.http.close()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"the collector never received {what}"
        time.sleep(0.05)  # the exporters send on their own schedule; nothing to await here
    return found


def test_a_run_arrives_as_one_trace_with_its_metrics_and_log_lines(
    exported: tuple[Api, Collected],
) -> None:
    api, collected = exported
    body = api.start(MESSAGE).json()
    cid = body["conversation_id"]
    assert api.read_run(cid)[-1]["type"] == "run.completed"

    def run_spans() -> list[dict[str, Any]]:
        with collected.lock:
            return [
                s
                for s in collected.spans
                if s["name"] == "run travelplanner"
                and s["attributes"].get("agentstream.conversation_id") == cid
            ]

    [run] = wait_for(run_spans, "the run's span")
    with collected.lock:
        spans = [s for s in collected.spans if s["trace_id"] == run["trace_id"]]
    [post] = [s for s in spans if s["name"] == "POST /api/agents/{agent}/conversations"]
    assert run["parent_id"] == post["span_id"]
    assert post["attributes"]["agentstream.run_id"] == body["run_id"]
    assert run["events"] == ["run.completed"]
    children = {s["parent_id"] for s in spans}
    assert run["span_id"] in children
    names = {s["name"] for s in spans}
    assert "chat scripted" in names
    assert {"execute_tool get_weather_forecast", "execute_tool get_local_events"} <= names

    def stream_linked() -> bool:
        with collected.lock:
            return any(
                s["name"] == "stream" and s["links"] and s["links"][0]["span_id"] == post["span_id"]
                for s in collected.spans
            )

    wait_for(stream_linked, "a stream span linked to the run")
    wait_for(lambda: collected.metric_names >= METRICS, f"the metrics {METRICS}")

    def lines() -> bool:
        with collected.lock:
            bodies = list(collected.log_bodies)
        return any(b.startswith("run ended") and cid in b for b in bodies) and any(
            b.startswith("request method=POST") and cid in b for b in bodies
        )

    wait_for(lines, "the request and run-end log lines")
