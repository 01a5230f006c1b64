"""`make run`'s launcher as a newcomer meets it: it brings up its own pieces, offline."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pexpect
import pytest
import redis

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api, text_of
from .devhost_process import REPO
from .redis_server import free_port
from .servers import serve_in_thread
from .standins import external_apis, tool_env

pytestmark = pytest.mark.slow  # `make run` in a terminal (pexpect), several at once

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ID = re.compile(r"\b[0-9a-f]{32}\b")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
CURSOR = re.compile(r"\b\d{13}-\d+\b")


def launcher_env(**settings: str) -> dict[str, str]:
    """The environment of a machine with nothing configured, plus ``settings``."""
    names = ("AZURE_", "OPENAI_", "REDIS_", "TICKETMASTER_", "OPEN_METEO_", "AGENTSTREAM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(names)}
    env["PATH"] = os.path.dirname(sys.executable) + ":/usr/bin:/bin"  # no func: the dev host
    env.update(settings)
    return env


@contextmanager
def launcher(
    preexec_fn: Callable[[], Any] | None = None, **settings: str
) -> Iterator[pexpect.spawn]:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "agentstream_dev.launcher"],
        cwd=str(REPO),
        env=launcher_env(**settings),
        encoding="utf-8",
        timeout=90,
        preexec_fn=preexec_fn,
    )
    child.logfile_read = io.StringIO()  # everything it printed, for assertions on the whole
    try:
        yield child
    finally:
        if child.isalive():
            child.sendintr()
            child.expect(pexpect.EOF)
        child.close()


def wait_until_ready(child: pexpect.spawn, port: int, *along_the_way: str) -> int:
    """Wait for the Ready banner; return the port of the Redis the launcher started."""
    child.expect(r"Redis: started a private redis-server on port (\d+) \(stopped on exit\)")
    redis_port = int(child.match.group(1))
    for text in along_the_way:
        child.expect_exact(text)
    child.expect_exact(f"In a browser:           http://localhost:{port}/api/ui")
    child.expect_exact(f"agentstream-chat --url http://localhost:{port}")
    child.expect_exact("Press Ctrl-C to stop.")
    return redis_port


def answers(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


def readme_session() -> list[str]:
    """The console-client session shown in the README, as lines (without the command line)."""
    readme = (REPO / "README.md").read_text()
    match = re.search(r"```\n\$ \.venv/bin/agentstream-chat\n(.*?)```", readme, re.DOTALL)
    assert match, "the README shows a session of .venv/bin/agentstream-chat"
    return match.group(1).splitlines()


def normalized(lines: list[str]) -> list[str]:
    """Ids, dates and cursors differ from run to run; everything else must not."""
    return [
        CURSOR.sub("<cursor>", DATE.sub("<date>", ID.sub("<id>", ANSI.sub("", line))))
        for line in lines
    ]


def test_offline_demo_tools_work_and_the_readme_session_is_reproducible() -> None:
    port = free_port()
    with launcher(PORT=str(port)) as child:
        redis_port = wait_until_ready(
            child, port, "OFFLINE DEMO - NO MODEL CONFIGURED", "LOCAL STAND-INS"
        )

        api = Api(f"http://127.0.0.1:{port}")
        started = api.start("Plan 3 days in Lisbon").json()
        events = api.read_run(started["conversation_id"])
        api.http.close()
        results = [json.loads(e["result"]) for e in events if e["type"] == "tool.result"]
        assert [sorted(r) for r in results] == [["days", "location"], ["events", "location"]]
        assert len(results[0]["days"]) == 3 and results[1]["events"]
        plan = text_of(events).splitlines()
        assert len(plan) == len(set(plan)) == 5, plan  # title, three days, farewell
        assert "A tool reported" not in text_of(events)

        session = readme_session()
        transcript = io.StringIO()
        chat = pexpect.spawn(
            # The README's .venv/bin/agentstream-chat, from the venv running the tests.
            os.path.join(os.path.dirname(sys.executable), "agentstream-chat"),
            cwd=str(REPO),
            env={**os.environ, "AGENTSTREAM_URL": f"http://localhost:{port}"},
            encoding="utf-8",
            timeout=60,
            dimensions=(50, 250),
        )
        chat.logfile_read = transcript
        for line in session:
            if line.startswith("You: "):
                chat.expect_exact("You: ")
                chat.sendline(line.removeprefix("You: "))
        chat.expect(pexpect.EOF)
        chat.close()
        shown = transcript.getvalue().replace("\r\n", "\n").splitlines()
        assert normalized(shown) == normalized(session)
    assert not answers(redis_port), "the launcher stops the redis-server it started"


def test_two_make_runs_side_by_side_and_a_third_on_a_used_port_refuses() -> None:
    first_port, second_port = free_port(), free_port()
    with launcher(PORT=str(first_port)) as first, launcher(PORT=str(second_port)) as second:
        first_redis = wait_until_ready(first, first_port)
        second_redis = wait_until_ready(second, second_port)
        assert first_redis != second_redis

        one, two = Api(f"http://127.0.0.1:{first_port}"), Api(f"http://127.0.0.1:{second_port}")
        cid = one.start("Hello there").json()["conversation_id"]
        assert one.read_run(cid)[-1]["type"] == "run.completed"
        assert two.http.get(f"/api/agents/travelplanner/conversations/{cid}").status_code == 404
        one.http.close()
        two.http.close()

        with launcher(PORT=str(first_port)) as third:
            third.expect(pexpect.EOF)
            output = third.before
        assert third.exitstatus == 1
        assert output.strip().splitlines() == [
            f"make run: port {first_port} is already in use (another `make run`?); "
            "stop that, or choose another port: PORT=7072 make run"
        ]
        assert first.isalive() and second.isalive()


def test_a_bad_port_setting_is_a_message_not_a_traceback() -> None:
    with launcher(PORT="abc") as child:
        child.expect(pexpect.EOF)
        output = child.before
    assert child.exitstatus == 2
    assert output.strip().splitlines() == [
        "make run: configuration error: PORT must be a whole number from 1 to 65535, got 'abc'"
    ]


def test_an_explicit_redis_that_does_not_answer_is_a_message() -> None:
    redis_port = free_port()
    with launcher(
        PORT=str(free_port()), REDIS_CONNECTION_STRING=f"127.0.0.1:{redis_port}"
    ) as child:
        child.expect(pexpect.EOF)
        output = child.before
    assert child.exitstatus == 1
    assert (
        f"make run: Redis at 127.0.0.1:{redis_port} (REDIS_CONNECTION_STRING) does not answer"
        in (output)
    )
    assert "Traceback" not in output and "Ready" not in output


def test_an_explicit_redis_is_used(redis_port: int) -> None:
    port = free_port()
    with launcher(PORT=str(port), REDIS_CONNECTION_STRING=f"127.0.0.1:{redis_port}") as child:
        child.expect_exact(f"Redis: using 127.0.0.1:{redis_port} (REDIS_CONNECTION_STRING)")
        child.expect_exact(f"In a browser:           http://localhost:{port}/api/ui")


def test_with_a_model_configured_there_is_no_offline_demo() -> None:
    port = free_port()
    apis = external_apis()
    with serve_in_thread(create_model_app()) as model_url, serve_in_thread(apis) as apis_url:
        settings = {"OPENAI_BASE_URL": f"{model_url}/v1", "OPENAI_MODEL": "scripted"}
        with launcher(PORT=str(port), **settings, **tool_env(apis_url)) as child:
            wait_until_ready(child, port)
            api = Api(f"http://127.0.0.1:{port}")
            started = api.start("Plan 2 days in Lisbon").json()
            events = api.read_run(started["conversation_id"])
            api.http.close()
            output = child.logfile_read.getvalue()
    assert "OFFLINE DEMO" not in output and "STAND-INS" not in output
    assert [e["name"] for e in events if e["type"] == "tool.result"] == [
        "get_weather_forecast",
        "get_local_events",
    ]
    # The tools called the services the settings name, not stand-ins of the launcher's own.
    assert {"name": "Lisbon", "count": "1", "language": "en", "format": "json"} in apis.state.seen
