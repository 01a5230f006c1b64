"""The console client as a person uses it: in a real pseudo-terminal, and piped."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pexpect
import pytest

from agentstream.scripted_model.server import create_app as create_model_app

from .api_client import Api, text_of
from .devhost_process import REPO, running_devhost
from .flaky_proxy import ProxyStats, flaky_proxy
from .servers import serve_in_thread
from .standins import external_apis, tool_env


@pytest.fixture(scope="module")
def app_url(redis_port: int) -> Iterator[str]:
    model = create_model_app(delay_seconds=0.002)
    with serve_in_thread(model) as model_url, serve_in_thread(external_apis()) as apis_url:
        env = {
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "OPENAI_BASE_URL": f"{model_url}/v1",
            "OPENAI_MODEL": "scripted",
            "STREAM_KEEPALIVE_SECONDS": "1",
            "DELTA_FLUSH_CHARS": "16",
            **tool_env(apis_url),
        }
        with running_devhost(env) as url:
            yield url


@pytest.fixture
def proxied(app_url: str) -> Iterator[tuple[str, ProxyStats]]:
    upstream_port = int(app_url.rsplit(":", 1)[1])
    with flaky_proxy(upstream_port, seed=7) as proxy:
        yield proxy


def run_client(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentstream.client", "--url", url, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def reference_text(app_url: str, conversation: str, run_id: str) -> str:
    api = Api(app_url)
    events = [e for e in api.read_sse(conversation, cursor="0") if e["run"] == run_id]
    return text_of(events)


def conversation_and_run(stderr: str) -> tuple[str, str]:
    words = stderr.split()
    return words[words.index("conversation") + 1], words[words.index("run") + 1]


def test_one_shot_survives_dropped_connections_and_pipes_only_the_text(
    app_url: str, proxied: tuple[str, ProxyStats]
) -> None:
    proxy_url, stats = proxied
    result = run_client(proxy_url, "-m", "Plan 5 days in Lisbon [[slow]]")
    assert result.returncode == 0, result.stderr
    conversation, run_id = conversation_and_run(result.stderr)
    assert stats.cuts >= 2, "the proxy should have dropped the stream several times"
    assert result.stdout == reference_text(app_url, conversation, run_id) + "\n"
    assert "get_weather_forecast" in result.stderr  # tool lines go to stderr


def test_exit_code_reflects_a_failed_run(app_url: str) -> None:
    result = run_client(app_url, "-m", "Tell me about trains [[fail-always:500]]")
    assert result.returncode == 1
    assert "[failed: The language model is unavailable" in result.stderr


def test_resume_a_conversation_from_a_cursor_as_ndjson(app_url: str) -> None:
    first = run_client(app_url, "-m", "Plan 2 days in Lisbon")
    conversation, _ = conversation_and_run(first.stderr)
    everything = Api(app_url).read_sse(conversation, cursor="0")
    cursor = everything[4]["id"]
    resumed = run_client(
        app_url, "--conversation", conversation, "--cursor", cursor, "--format", "ndjson"
    )
    assert resumed.returncode == 0
    assert [json.loads(line) for line in resumed.stdout.splitlines()] == everything[5:]


def screen_text(transcript: str) -> str:
    """The assistant's text on screen: no tool lines, no client notes."""
    lines = transcript.replace("\r\n", "\n").split("\n")
    kept = [line for line in lines if not line.startswith(("  ↳", "["))]
    return "\n".join(kept).strip("\n")


def test_interactive_interrupt_resume_follow_up_and_a_dropped_connection(
    app_url: str, proxied: tuple[str, ProxyStats]
) -> None:
    proxy_url, stats = proxied
    child = pexpect.spawn(
        sys.executable,
        ["-m", "agentstream.client", "--url", proxy_url, "--no-color"],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )
    try:
        child.expect_exact("You: ")
        child.sendline("Plan 5 days in Lisbon [[slow]]")
        child.expect(r"Conversation: ([0-9a-f]{32})")
        conversation = child.match.group(1)
        child.expect_exact("Press [Enter] to interrupt the stream.")
        child.expect_exact("Day 2")
        before_interrupt = child.before + "Day 2"
        child.sendline("")
        child.expect(
            r"\[stopped reading at cursor (\d+-\d+); the agent keeps going\. "
            r"Press \[Enter\] to resume\]"
        )
        before_interrupt += child.before
        child.sendline("")
        child.expect_exact("[resuming]")
        child.expect_exact("You: ")
        after_resume = child.before
        shown = screen_text(before_interrupt) + screen_text(after_resume)

        api = Api(app_url)
        run_events: list[dict[str, Any]] = api.read_sse(conversation)
        # The terminal echoes the two Enter presses as line breaks; the text is otherwise whole.
        assert shown.replace("\n", "") == text_of(run_events).replace("\n", "")
        assert shown.count("Enjoy your trip!") == 1
        assert stats.cuts >= 1, "the stream should have been dropped at least once"

        child.sendline("What about something cheaper?")
        child.expect_exact('Earlier you asked: "Plan 5 days in Lisbon')
        child.expect_exact("You: ")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_ctrl_c_mid_stream_exits_cleanly(app_url: str) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "agentstream.client", "--url", app_url],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
    )
    child.expect_exact("You: ")
    child.sendline("Plan 5 days in Lisbon [[slow]]")
    child.expect_exact("Day 1")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in (child.before or "")
