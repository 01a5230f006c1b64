"""The console client as a person uses it: in a real pseudo-terminal, and piped."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pexpect
import pytest

from agentstream_client.__main__ import resume_hint
from agentstream_client.http import ApiClient
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api, text_of
from .devhost_process import REPO, devhost_process, running_devhost
from .flaky_proxy import ProxyStats, flaky_proxy
from .redis_server import free_port
from .standins import scripted_services

pytestmark = pytest.mark.slow  # the console client in a terminal (pexpect), apps killed


@pytest.fixture(scope="module")
def app_env(redis_port: int) -> Iterator[dict[str, str]]:
    model = create_model_app(delay_seconds=0.002)
    with scripted_services(model, redis_port) as services:
        yield {**services, "STREAM_KEEPALIVE_SECONDS": "1", "DELTA_FLUSH_CHARS": "16"}


@pytest.fixture(scope="module")
def app_url(app_env: dict[str, str]) -> Iterator[str]:
    with running_devhost(app_env) as url:
        yield url


@pytest.fixture
def proxied(app_url: str) -> Iterator[tuple[str, ProxyStats]]:
    upstream_port = int(app_url.rsplit(":", 1)[1])
    with flaky_proxy(upstream_port, seed=7) as proxy:
        yield proxy


def run_client(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentstream_client", "--url", url, *args],
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
        ["-m", "agentstream_client", "--url", proxy_url, "--no-color"],
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
        child.expect(r"\[stopped reading at cursor (\d+-\d+)\. Press \[Enter\] to resume;")
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


@pytest.mark.slow
def test_ctrl_c_mid_stream_pauses_and_a_second_ctrl_c_exits_with_the_resume_command(
    app_url: str,
) -> None:
    child = spawn_client("--url", app_url, "--no-color")
    child.expect_exact("You: ")
    child.sendline("Plan 5 days in Lisbon [[slow]]")
    child.expect(r"Conversation: ([0-9a-f]{32})")
    conversation = child.match.group(1)
    child.expect_exact("Day 1")
    child.sendintr()
    child.expect(r"\[stopped reading at cursor (\d+-\d+)\. Press \[Enter\] to resume;")
    cursor = child.match.group(1)
    child.sendintr()
    child.expect_exact("[the run goes on; read the rest with: ")
    child.expect_exact(f"agentstream-chat --url {app_url} -c {conversation} --cursor {cursor}]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in (child.before or "")


# --- failing like a good CLI ------------------------------------------------------------------

CONVERSATION_ID = re.compile(r"[0-9a-f]{32}")


def spawn_client(*args: str, **options: Any) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "agentstream_client", *args],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
        **options,
    )


@pytest.mark.parametrize(
    "mode",
    [("-m", "Plan 3 days in Lisbon"), ("-c", "0" * 32), ("-c", "0" * 32, "--cursor", "1-0")],
    ids=["one-shot", "resume", "resume-from-cursor"],
)
def test_unreachable_app_is_one_line_and_exit_code_2(mode: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_client(url, *mode)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"agentstream-chat: cannot reach the app at {url} (connection refused); "
        "is it running? (`make run` starts it)"
    ]


def test_unreachable_app_in_interactive_mode_is_one_line_and_exit_code_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    child = spawn_client("--url", url)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    lines = [line for line in child.before.splitlines() if line.strip()]
    assert lines == [
        f"agentstream-chat: cannot reach the app at {url} (connection refused); "
        "is it running? (`make run` starts it)"
    ]


@pytest.mark.parametrize("interactive", [False, True], ids=["one-shot", "interactive"])
def test_an_app_killed_mid_stream_is_reported_after_bounded_reconnects(
    app_env: dict[str, str], interactive: bool
) -> None:
    with devhost_process(app_env, free_port()) as devhost:
        url = devhost.base_url
        if interactive:
            child = spawn_client("--url", url, "--no-color")
            child.expect_exact("You: ")
            child.sendline("Plan 5 days in Lisbon [[slow]]")
        else:
            child = spawn_client("--url", url, "-m", "Plan 5 days in Lisbon [[slow]]")
        try:
            child.expect(r"[Cc]onversation:? ([0-9a-f]{32})")
            conversation = child.match.group(1)
            child.expect_exact("Day 1")
            devhost.kill()
            for attempt in range(1, 6):
                # The first attempt may meet a pooled keep-alive connection the kill closed.
                child.expect(
                    rf"(connection refused|the connection was closed); reconnecting… "
                    rf"\(attempt {attempt} of 5, in \d+\.\d s\)\]"
                )
            child.expect_exact(
                f"the app at {url} stopped answering (connection refused); "
                "gave up after 5 reconnect attempts"
            )
            child.expect(rf"agentstream-chat --url {url} -c {conversation} --cursor \d+-\d+")
            if interactive:
                child.expect_exact("You: ")  # back at the prompt, not frozen
                child.sendline("exit")
            child.expect(pexpect.EOF)
            assert "keeps going" not in child.before
            assert "Traceback" not in child.before
        finally:
            child.close()
    assert child.exitstatus == (0 if interactive else 2)


def test_a_closed_pipe_ends_the_client_quietly(app_url: str) -> None:
    message = "Plan 5 days in Lisbon [[slow]]"
    client = subprocess.Popen(
        [sys.executable, "-m", "agentstream_client", "--url", app_url, "-m", message],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    head = subprocess.run(["head", "-1"], stdin=client.stdout, capture_output=True, text=True)
    assert client.stdout is not None
    client.stdout.close()  # only head holds the pipe's read end, as in a shell pipeline
    _, stderr = client.communicate(timeout=120)
    assert head.stdout == "Here is your 5-day plan for Lisbon, Portugal.\n"
    assert client.returncode == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


def test_one_shot_to_a_gone_conversation_starts_a_new_one(app_url: str) -> None:
    gone = uuid.uuid4().hex
    result = run_client(app_url, "-c", gone, "-m", "Plan 2 days in Lisbon")
    assert result.returncode == 0, result.stderr
    assert f"[conversation {gone} is gone (expired or deleted); starting a new one]" in (
        result.stderr
    )
    conversation, _ = conversation_and_run(result.stderr)
    assert conversation != gone
    assert result.stdout.startswith("Here is your 2-day plan for Lisbon")


def test_resuming_a_gone_conversation_says_so(app_url: str) -> None:
    gone = uuid.uuid4().hex
    result = run_client(app_url, "-c", gone)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"agentstream-chat: conversation {gone} is gone (expired or deleted)"
    ]


def test_interactive_chat_whose_conversation_was_deleted_starts_a_new_one(app_url: str) -> None:
    child = spawn_client("--url", app_url, "--no-color")
    try:
        child.expect_exact("You: ")
        child.sendline("Plan 2 days in Lisbon")
        child.expect(r"Conversation: ([0-9a-f]{32})")
        first = child.match.group(1)
        child.expect_exact("Enjoy your trip!")
        child.expect_exact("You: ")
        deleted = httpx.delete(f"{app_url}/api/agents/travelplanner/conversations/{first}")
        assert deleted.status_code == 204
        child.sendline("Plan 3 days in Rome")
        gone = f"[conversation {first} is gone (expired or deleted); starting a new one]"
        child.expect_exact(gone)
        child.expect(r"Conversation: ([0-9a-f]{32})")
        assert child.match.group(1) != first
        child.expect_exact("Here is your 3-day plan for Rome, Lazio, Italy.")
        child.expect_exact("You: ")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_interactive_chat_started_with_sigint_ignored_still_stops_on_ctrl_c(app_url: str) -> None:
    child = spawn_client(
        "--url", app_url, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    )
    child.expect_exact("You: ")
    child.sendline("Plan 5 days in Lisbon [[slow]]")
    child.expect_exact("Day 1")
    child.sendintr()  # pauses
    child.expect_exact("/quit exits]")
    child.sendintr()  # exits
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in child.before


# --- pause, resume, /new, kept input, the resume command ----------------------------------------


def pause(child: pexpect.spawn) -> tuple[str, str]:
    """Press Enter mid-answer; return the screen up to the pause note, and the cursor."""
    child.sendline("")
    child.expect(
        r"\[stopped reading at cursor (\d+-\d+)\. Press \[Enter\] to resume; "
        r"/new starts a new conversation, /quit exits\]"
    )
    return child.before, child.match.group(1)


@pytest.mark.slow
def test_pause_keeps_typed_input_resumes_whole_words_starts_anew_and_quits_with_a_hint(
    app_url: str,
) -> None:
    child = spawn_client("--url", app_url.removeprefix("http://"), "--no-color")
    try:
        child.expect_exact("You: ")
        child.sendline("Plan 5 days in Lisbon [[slow]]")
        child.expect(r"Conversation: ([0-9a-f]{32})")
        first = child.match.group(1)
        child.expect_exact("Day 1")
        screen, _ = pause(child)
        # The pause ends the line only where a word ended: no word is split across lines.
        assert re.search(r"\S\r?\n$", screen) is None, screen[-80:]
        child.sendline("What about something cheaper?")  # typed during the pause: kept
        child.expect_exact("[kept: it is sent when this answer ends. Press [Enter] to resume]")
        child.sendline("")
        child.expect_exact("[resuming]")
        child.expect_exact("Enjoy your trip!")
        child.expect_exact("You: What about something cheaper?")  # sent by itself
        child.expect(r"Conversation: ([0-9a-f]{32})")
        assert child.match.group(1) == first
        child.expect_exact('Earlier you asked: "Plan 5 days in Lisbon')
        child.expect_exact("You: ")

        child.sendline("Plan 5 days in Porto [[slow]]")
        child.expect_exact("Day 1")
        pause(child)
        child.sendline("/new")
        child.expect_exact("[a new conversation starts with your next message]")
        child.expect_exact("You: ")
        child.sendline("Plan 5 days in Madrid [[slow]]")
        child.expect(r"Conversation: ([0-9a-f]{32})")
        second = child.match.group(1)
        assert second != first
        child.expect_exact("Day 1")
        _, cursor = pause(child)
        child.sendline("/quit")
        child.expect(r"\[the run goes on; read the rest with: (.*)\]")
        hint = child.match.group(1).split()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert hint == ["agentstream-chat", "--url", app_url, "-c", second, "--cursor", cursor]

    # The printed command reads the rest of the answer, to its end.
    rest = run_client(app_url, *hint[3:])
    assert rest.returncode == 0
    assert rest.stdout.rstrip().endswith("Enjoy your trip!")


def test_a_url_without_a_scheme_means_http_and_help_is_plain_text(app_url: str) -> None:
    result = run_client(app_url.removeprefix("http://"), "-m", "Hello there")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    help_text = subprocess.run(
        [sys.executable, "-m", "agentstream_client", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "`" not in help_text and "/new" in help_text


def test_the_resume_command_names_what_differs_from_the_defaults() -> None:
    default = ApiClient("http://localhost:7071")
    other = ApiClient("http://127.0.0.1:7072", agent="packer")
    try:
        assert resume_hint("c1", None, default) == "agentstream-chat -c c1"
        assert resume_hint("c1", "5-0", other) == (
            "agentstream-chat --url http://127.0.0.1:7072 --agent packer -c c1 --cursor 5-0"
        )
    finally:
        default.close()
        other.close()
