"""The browser page in headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.scripted_model.server import create_app as create_model_app

from .api_client import Api, text_of
from .devhost_process import REPO, running_devhost
from .flaky_proxy import flaky_proxy
from .servers import serve_in_thread
from .standins import external_apis, tool_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it with apt)"
)


@pytest.fixture(scope="module")
def app_url(redis_port: int) -> Iterator[str]:
    with (
        serve_in_thread(create_model_app(delay_seconds=0.002)) as model_url,
        serve_in_thread(external_apis()) as apis_url,
    ):
        env = {
            "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}",
            "OPENAI_BASE_URL": f"{model_url}/v1",
            "OPENAI_MODEL": "scripted",
            "STREAM_KEEPALIVE_SECONDS": "1",
            "SSE_RETRY_MS": "100",
            "DELTA_FLUSH_CHARS": "16",
            **tool_env(apis_url),
        }
        with running_devhost(env) as url:
            yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


def run_text(app_url: str, conversation: str) -> str:
    return text_of(Api(app_url).read_sse(conversation))


def ask(page: Any, message: str) -> None:
    page.fill("#message", message)
    page.click("#send")


def test_a_prompt_streams_and_a_dropped_connection_resumes_by_itself(
    app_url: str, browser: Any
) -> None:
    upstream_port = int(app_url.rsplit(":", 1)[1])
    with flaky_proxy(upstream_port, seed=11, min_bytes=800, max_bytes=2500) as (url, stats):
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(f"{url}/api/ui?code=test-key")
        ask(page, "Plan 5 days in Lisbon [[slow]]")
        page.wait_for_function("window.agentState.runText.includes('Day 1')")
        page.wait_for_function("window.agentState.finished", timeout=60_000)
        state = page.evaluate("window.agentState")
        assert stats.cuts >= 1, "the proxy should have dropped the stream"
        assert state["opens"] >= 2, "EventSource should have reconnected by itself"
        assert page.inner_text("#status") == "completed"
        assert state["runText"] == run_text(app_url, state["conversationId"])
        assert page.inner_text("#conversation") == state["conversationId"]
        assert page.inner_text("#cursor") == state["cursor"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-page.png"), full_page=True)
        page.close()


def test_disconnect_and_reconnect_controls_and_a_follow_up(app_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{app_url}/api/ui")
    ask(page, "Plan 5 days in Lisbon [[slow]]")
    page.wait_for_function("window.agentState.runText.includes('Day 1')")
    page.click("#toggle")
    assert page.inner_text("#status") == "disconnected"
    page.click("#toggle")
    page.wait_for_function("window.agentState.finished", timeout=60_000)
    state = page.evaluate("window.agentState")
    assert state["runText"] == run_text(app_url, state["conversationId"])
    assert state["runText"].count("Enjoy your trip!") == 1

    ask(page, "What about something cheaper?")
    page.wait_for_function(
        "window.agentState.finished && window.agentState.runText.includes('Earlier you asked')"
    )
    assert page.inner_text("#conversation") == state["conversationId"]
    page.close()


def test_the_page_uses_no_external_resources(app_url: str) -> None:
    html = Api(app_url).http.get("/api/ui").text
    assert "EventSource" in html
    assert "http://" not in html and "https://" not in html
    assert Path(REPO / "agentstream" / "web" / "index.html").read_text() == html
