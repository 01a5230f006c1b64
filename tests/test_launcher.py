"""`make run`'s launcher on a machine with nothing running: it brings up what the app needs."""

from __future__ import annotations

import os
import sys

import pexpect
import redis

from .api_client import Api, text_of
from .devhost_process import REPO
from .redis_server import free_port


def test_make_run_starts_redis_the_scripted_model_and_the_app_then_cleans_up() -> None:
    redis_port, app_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    env.update(
        PORT=str(app_port),
        REDIS_CONNECTION_STRING=f"127.0.0.1:{redis_port}",
        PATH=os.path.dirname(sys.executable) + ":/usr/bin:/bin",
    )
    launcher = pexpect.spawn(
        sys.executable,
        ["-m", "agentstream.launcher"],
        cwd=str(REPO),
        env=env,
        encoding="utf-8",
        timeout=60,
    )
    try:
        launcher.expect_exact(f"Redis: started a local redis-server on port {redis_port}")
        launcher.expect_exact("NO MODEL CONFIGURED")
        launcher.expect_exact("starting the development host")
        launcher.expect_exact("DEVELOPMENT HOST - this is not the Azure Functions runtime.")
        launcher.expect_exact(f"Ready: http://localhost:{app_port}/api")
        launcher.expect_exact("Press Ctrl-C to stop.")

        api = Api(f"http://127.0.0.1:{app_port}")
        started = api.start("Hello there").json()
        events = api.read_run(started["conversation_id"])
        assert events[-1]["type"] == "run.completed"
        assert text_of(events).startswith("Where would you like to go?")
        api.http.close()
    finally:
        launcher.sendintr()
        launcher.expect(pexpect.EOF)
        launcher.close()
    assert not _answers(redis_port), "the redis-server the launcher started must be stopped"


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False
